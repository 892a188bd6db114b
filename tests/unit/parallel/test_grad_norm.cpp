// Gradient clipping against hand-computed numbers: the norm counts only the flagged gradients (the
// pieces this rank owns), adds the other ranks' sums, and scales every gradient.
#include <gtest/gtest.h>

#include <cmath>

#include "parallel/grad_norm.h"

namespace titan {
namespace {

TEST(ClipGradNorm, ScalesToMaxNormAndReturnsPreClipNorm) {
  auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm_({a, b}, {true, true}, 1.0), 5.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);
  EXPECT_NEAR(clip_grad_norm_({a, b}, {true, true}, 10.0), 1.0, 1e-5);  // below max_norm: unchanged
  EXPECT_NEAR(b.grad()[0].item<double>(), 0.8, 1e-5);
}

TEST(ClipGradNorm, CountsOwnedPiecesOnceAndScalesAll) {
  // This rank owns a (3, 0) but not b (a replica of 4 another rank counts); that rank adds 16.
  auto a = torch::zeros({2}).requires_grad_(true), b = torch::zeros({1}).requires_grad_(true);
  a.mutable_grad() = torch::tensor({3.0f, 0.0f});
  b.mutable_grad() = torch::tensor({4.0f});
  double seen = -1;
  const double norm = clip_grad_norm_({a, b}, {true, false}, 1.0, [&](double sq) {
    seen = sq;
    return sq + 16.0;
  });
  EXPECT_DOUBLE_EQ(seen, 9.0);
  EXPECT_NEAR(norm, 5.0, 1e-12);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 / (5.0 + 1e-6), 1e-6);  // unowned gradients are clipped too
}

// On the CPU one float64 pass over fixed blocks: fp32, bf16, fp16 and fp64 gradients (a transposed one
// too) of several blocks and a remainder, against float64 sums of squares to 1e-13, and the same bits on
// one thread as on two. Under max_norm no gradient bit changes.
TEST(ClipGradNorm, CpuNormIsFloat64AndThreadCountFree) {
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
  const double one = clip_grad_norm_(params, counted, 1e9);
  at::set_num_threads(std::max(2, threads));
  const double two = clip_grad_norm_(params, counted, 1e9);
  at::set_num_threads(threads);
  EXPECT_NEAR(one, std::sqrt(sq), 1e-13 * std::sqrt(sq));
  EXPECT_EQ(one, two);
  for (size_t k = 0; k < params.size(); ++k) EXPECT_TRUE(torch::equal(params[k].grad(), before[k])) << k;
}

// On CUDA the norm is one fused fp32 reduction per tensor: against float64 sums of squares of the
// same bf16 and fp32 gradients (1.2M elements: the CPU path slices those), within 1e-6 relative.
TEST(ClipGradNorm, CudaNormMatchesFloat64) {
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
    const auto before = params[0].grad().to(torch::kFloat64).clone();
    const double norm = clip_grad_norm_(params, std::vector<bool>(params.size(), true), 1.0);
    EXPECT_NEAR(norm, std::sqrt(sq), 1e-6 * std::sqrt(sq)) << dtype;
    const double coef = 1.0 / (norm + 1e-6);
    EXPECT_TRUE(
        torch::allclose(params[0].grad().to(torch::kFloat64), before * coef, dtype == torch::kFloat32 ? 1e-6 : 1e-2))
        << dtype;
  }
}

}  // namespace
}  // namespace titan
