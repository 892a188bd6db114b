// The gradient norm against hand-computed numbers: it counts only the flagged gradients (the pieces
// this rank owns), adds the other ranks' sums and changes no gradient; the clip coefficient.
#include <gtest/gtest.h>

#include <cmath>

#include "parallel/grad_norm.h"

namespace titan {
namespace {

TEST(GradNorm, NormOfEveryGradientAndNoneChanged) {
  auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(grad_norm({a, b}, {true, true}), 5.0, 1e-12);
  EXPECT_EQ(a.grad()[0].item<float>(), 3.0f);
  EXPECT_EQ(b.grad()[0].item<float>(), 4.0f);
}

TEST(GradNorm, CountsOwnedPiecesOnce) {
  // This rank owns a (3, 0) but not b (a replica of 4 another rank counts); that rank adds 16.
  auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  double seen = -1;
  const double norm = grad_norm({a, b}, {true, false}, [&](double sq) {
    seen = sq;
    return sq + 16.0;
  });
  EXPECT_DOUBLE_EQ(seen, 9.0);
  EXPECT_NEAR(norm, 5.0, 1e-12);
}

TEST(GradNorm, ClipCoefficientAsTorchClipGradNorm) {
  EXPECT_DOUBLE_EQ(clip_coefficient(5.0, 1.0), 1.0 / (5.0 + 1e-6));
  EXPECT_EQ(clip_coefficient(1.0, 10.0), 1.0);  // below max_norm: no clip
  EXPECT_EQ(clip_coefficient(3.0, 0.0), 0.0);
}

// On the CPU one float64 pass over fixed blocks: fp32, bf16, fp16 and fp64 gradients (a transposed one
// too) of several blocks and a remainder, against float64 sums of squares to 1e-13, and the same bits on
// one thread as on two; no gradient bit changes.
TEST(GradNorm, CpuNormIsFloat64AndThreadCountFree) {
  torch::manual_seed(0);
  std::vector<torch::Tensor> params;
  double sq = 0;
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kHalf, torch::kFloat64})
    for (int64_t n : {200003, 7, 0}) {
      auto p = torch::zeros({n}, dtype).requires_grad_(true);
      p.mutable_grad() = torch::randn({n}, dtype);
      sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
      params.push_back(p);
    }
  auto t = torch::zeros({300, 500}).requires_grad_(true);
  t.mutable_grad() = torch::randn({500, 300}).t();  // not contiguous
  sq += t.grad().to(torch::kFloat64).pow(2).sum().item<double>();
  params.push_back(t);
  std::vector<torch::Tensor> before;
  for (const auto& p : params) before.push_back(p.grad().clone());
  const std::vector<bool> counted(params.size(), true);
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const double one = grad_norm(params, counted);
  at::set_num_threads(std::max(2, threads));
  const double two = grad_norm(params, counted);
  at::set_num_threads(threads);
  EXPECT_NEAR(one, std::sqrt(sq), 1e-13 * std::sqrt(sq));
  EXPECT_EQ(one, two);
  for (size_t k = 0; k < params.size(); ++k) EXPECT_TRUE(torch::equal(params[k].grad(), before[k])) << k;
}

// On CUDA the norm is one fused fp32 reduction per tensor: against float64 sums of squares of the
// same bf16 and fp32 gradients (1.2M elements in one reduction), within 1e-6 relative.
TEST(GradNorm, CudaNormMatchesFloat64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a GPU (none visible)";
  torch::manual_seed(0);
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    std::vector<torch::Tensor> params;
    double sq = 0;
    for (int64_t n : {1200000, 4096, 7}) {
      auto p = torch::zeros({n}, torch::dtype(dtype).device(torch::kCUDA)).requires_grad_(true);
      p.mutable_grad() = torch::randn({n}, torch::dtype(dtype).device(torch::kCUDA));
      sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
      params.push_back(p);
    }
    const double norm = grad_norm(params, std::vector<bool>(params.size(), true));
    EXPECT_NEAR(norm, std::sqrt(sq), 1e-6 * std::sqrt(sq)) << dtype;
  }
}

}  // namespace
}  // namespace titan
