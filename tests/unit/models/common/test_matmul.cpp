// bf16 matmuls with fp32 accumulation: every result, forward and backward, is the float64
// product of the bf16 operands rounded once to bf16 (within one bf16 ulp for ties near a boundary).
#include <gtest/gtest.h>

#include "models/common/matmul.h"
#include "models/common/torch_api.h"

namespace titan {
namespace {

torch::Tensor f64(const torch::Tensor& t) {
  return t.to(torch::kFloat64);
}

// Largest distance from the correctly rounded value, in units of the bf16 spacing at that value.
double ulps_from_rounded(const torch::Tensor& got, const torch::Tensor& exact) {
  const auto rounded = f64(exact.to(torch::kBFloat16));
  const auto ulp =
      torch::pow(2.0, torch::floor(torch::log2(rounded.abs().clamp_min(1e-30))) - 7);  // bf16: 8-bit mantissa
  return ((f64(got) - rounded).abs() / ulp).max().item<double>();
}

struct Fp32Accumulation : ::testing::Test {
  void SetUp() override {
    torch::manual_seed(7);
    set_low_precision_gemm(LowPrecisionGemm::kFp32);
  }
};

TEST_F(Fp32Accumulation, LinearForwardAndGradientsAreRoundedFloat64Products) {
  auto x = torch::randn({3, 5, 64}).to(torch::kBFloat16).requires_grad_(true);  // (B, T, in)
  auto w = torch::randn({48, 64}).to(torch::kBFloat16).requires_grad_(true);    // (out, in)
  auto g = torch::randn({3, 5, 48}).to(torch::kBFloat16);                       // (B, T, out)
  auto y = apply_linear(x, w);
  y.backward(g);
  ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_LE(ulps_from_rounded(y, torch::matmul(f64(x), f64(w).t())), 1.0);
  EXPECT_LE(ulps_from_rounded(x.grad(), torch::matmul(f64(g), f64(w))), 1.0);
  EXPECT_LE(ulps_from_rounded(w.grad(), f64(g).reshape({-1, 48}).t().mm(f64(x).reshape({-1, 64}))), 1.0);
}

TEST_F(Fp32Accumulation, BatchedMatmulForwardAndGradientsAreRoundedFloat64Products) {
  auto a = torch::randn({2, 3, 16, 32}).to(torch::kBFloat16).requires_grad_(true);                   // (B, H, n, k)
  auto b = torch::randn({2, 3, 8, 32}).to(torch::kBFloat16).transpose(-1, -2).requires_grad_(true);  // (B, H, k, m)
  auto g = torch::randn({2, 3, 16, 8}).to(torch::kBFloat16);
  auto c = batched_matmul(a, b);
  c.backward(g);
  EXPECT_LE(ulps_from_rounded(c, torch::matmul(f64(a), f64(b))), 1.0);
  EXPECT_LE(ulps_from_rounded(a.grad(), torch::matmul(f64(g), f64(b).transpose(-1, -2))), 1.0);
  EXPECT_LE(ulps_from_rounded(b.grad(), torch::matmul(f64(a).transpose(-1, -2), f64(g))), 1.0);
}

TEST_F(Fp32Accumulation, Float32IsUntouched) {
  auto x = torch::randn({4, 8}), w = torch::randn({6, 8});
  EXPECT_TRUE(torch::equal(apply_linear(x, w), torch::linear(x, w)));
}

TEST(LowPrecisionGemmProbe, PrefersFp32AccumulationOverAKernelThatAccumulatesInBf16) {
  const auto probe = probe_low_precision_gemm(torch::kBFloat16, torch::kCPU);
  // The correctly rounded 512-term dot products of unit normals are off by at most half a bf16
  // ulp of values up to ~100: under 0.5.
  EXPECT_LT(probe.fp32_error, 0.5);
  if (probe.native_error > 2.0 * probe.fp32_error) EXPECT_EQ(probe.choice, LowPrecisionGemm::kFp32);
  EXPECT_EQ(probe_low_precision_gemm(torch::kFloat32, torch::kCPU).native_flops, 0.0);  // fp32 needs no probe
}

}  // namespace
}  // namespace titan
