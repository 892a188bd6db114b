// The summed cross-entropy: a hand-computed case on every device there is, and the fused kernels
// against torch's float64 cross-entropy (values and gradients, bf16 and fp32, a vocabulary of no
// round size, ignored labels), alone and fused with the projection (one chunk and several), and a
// label out of range named.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "models/common/cross_entropy.h"

namespace titan {
namespace {

std::vector<torch::Device> devices() {
  std::vector<torch::Device> out{torch::kCPU};
  if (torch::cuda::is_available()) out.push_back(torch::kCUDA);
  return out;
}

TEST(CrossEntropySum, HandComputed) {
  // Row 0: logits (0, ln 3), label 1: log(1 + 3) - ln 3. Row 1 ignored. Row 2: (0, 0), label 0: ln 2.
  for (const auto& device : devices()) {
    auto logits = torch::tensor({0.0f, std::log(3.0f), 5.0f, -5.0f, 0.0f, 0.0f}).view({3, 2}).to(device).requires_grad_();
    auto loss = cross_entropy_sum(logits, torch::tensor({int64_t{1}, int64_t{-100}, int64_t{0}}).to(device));
    EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
    EXPECT_NEAR(loss.item<double>(), std::log(4.0 / 3.0) + std::log(2.0), 1e-6) << device;
    loss.backward();
    // d/dlogits = softmax - onehot: row 0 (1/4, 3/4 - 1), row 1 zero, row 2 (1/2 - 1, 1/2).
    auto expected = torch::tensor({0.25f, -0.25f, 0.0f, 0.0f, -0.5f, 0.5f}).view({3, 2});
    EXPECT_TRUE(torch::allclose(logits.grad().cpu(), expected, 1e-6, 1e-6)) << device;
  }
}

TEST(CrossEntropySum, KernelsMatchFloat64) {
  torch::manual_seed(0);
  for (const auto& device : devices())
    for (int64_t V : {1000, 1001}) {  // 1001: no multiple of any vector width
      for (auto [dtype, tol] : {std::pair{torch::kFloat32, 1e-5}, std::pair{torch::kBFloat16, 1e-2}}) {
        const int64_t N = 37;
        auto logits = (torch::randn({N, V}) * 4).to(dtype);
        auto labels = torch::randint(0, V, {N}, torch::kInt64);
        labels.index_put_({torch::arange(0, N, 5)}, -100);
        auto x64 = logits.to(torch::kFloat64).requires_grad_();
        auto ref = torch::nn::functional::cross_entropy(
            x64, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
        (ref * 0.5).backward();
        auto x = logits.to(device).requires_grad_();
        auto loss = cross_entropy_sum(x, labels.to(device));
        (loss * 0.5).backward();
        const std::string where = c10::str(device, " V ", V, " ", dtype);
        EXPECT_NEAR(loss.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>()) << where;
        EXPECT_EQ(x.grad().scalar_type(), dtype);
        const double g_err = (x.grad().cpu().to(torch::kFloat64) - x64.grad()).abs().max().item<double>();
        EXPECT_LT(g_err, tol * 0.5) << where;  // gradients are at most 0.5 here, rounded to dtype
      }
    }
}

TEST(CrossEntropySum, LinearFusedMatchesFloat64) {
  torch::manual_seed(1);
  namespace F = torch::nn::functional;
  const int64_t N = 37, D = 24;
  for (const auto& device : devices())
    // V: no multiple of a vector width or a warp, 8193 taking CUDA's 1024-thread blocks; chunk 0: all
    // rows in one, 7: six chunks, the last of 2 rows
    for (auto [V, chunk] : {std::pair<int64_t, int64_t>{1001, 0}, {1001, 7}, {8193, 0}, {8193, 7}})
      // float64: on the CPU torch's ops per chunk in fp32 (dtypes without a CPU kernel); CUDA's kernel
      for (auto [dtype, tol] : {std::pair{torch::kFloat32, 1e-5}, std::pair{torch::kBFloat16, 2e-2},
                                std::pair{torch::kFloat64, 1e-6}}) {
        const auto h = torch::randn({N, D}).to(dtype), w = (torch::randn({V, D}) * 0.5).to(dtype);
        auto labels = torch::randint(0, V, {N}, torch::kInt64);
        labels.index_put_({torch::arange(0, N, 5)}, -100);
        auto h64 = h.to(torch::kFloat64).requires_grad_(), w64 = w.to(torch::kFloat64).requires_grad_();
        auto ref = F::cross_entropy(F::linear(h64, w64), labels, F::CrossEntropyFuncOptions().reduction(torch::kSum));
        (ref * 0.25).backward();
        auto x = h.to(device).requires_grad_(), wd = w.to(device).requires_grad_();
        auto loss = linear_cross_entropy_sum(x, wd, labels.to(device), -100, chunk);
        (loss * 0.25).backward();
        const std::string where = c10::str(device, " V ", V, " chunk ", chunk, " ", dtype);
        EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
        EXPECT_NEAR(loss.item<double>(), ref.item<double>(), tol * ref.item<double>()) << where;
        EXPECT_EQ(x.grad().scalar_type(), dtype);
        EXPECT_EQ(wd.grad().scalar_type(), dtype);
        for (auto [ours, exact] : {std::pair{x.grad(), h64.grad()}, std::pair{wd.grad(), w64.grad()}}) {
          const double scale = exact.abs().max().item<double>();
          EXPECT_LT((ours.cpu().to(torch::kFloat64) - exact).abs().max().item<double>(), tol * scale) << where;
        }
        torch::NoGradGuard no_grad;  // evaluation: the loss alone, the same
        EXPECT_NEAR(linear_cross_entropy_sum(x, wd, labels.to(device), -100, chunk).item<double>(), loss.item<double>(),
                    1e-6 * loss.item<double>())
            << where;
      }
}

TEST(CrossEntropySum, LabelOutOfRangeIsNamed) {
  for (const auto& loss : std::vector<std::function<void()>>{
           [] { cross_entropy_sum(torch::zeros({2, 4}), torch::tensor({int64_t{1}, int64_t{4}})); },
           [] { linear_cross_entropy_sum(torch::zeros({2, 3}), torch::zeros({4, 3}), torch::tensor({int64_t{1}, int64_t{4}})); }})
    try {
      loss();
      FAIL() << "no error";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("cross_entropy_sum: label 4 of row 1 is outside [0, 4) and is not ignore_index -100"),
                std::string::npos)
          << e.what();
    }
}

}  // namespace
}  // namespace titan
