// The CPU kernels' exp: exp_f32 (every vector width) and exp16 (AVX-512's 16 lanes) against float64's
// over fp32's whole normal range, within 2 ulp; below it both give e^-87, above it exp16 gives inf; NaN stays NaN.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <vector>

#include "models/common/cpu_kernel.h"

namespace titan {
namespace {

// x in [-87, 88] (fp32 values) with their exact e^x, and a bound of 2 ulp of e^x.
std::vector<float> exponents() {
  std::vector<float> x;
  for (int i = 0; i <= 175 * 1024; ++i) x.push_back(-87.f + static_cast<float>(i) / 1024 + 1e-4f * (i % 7));
  return x;
}
double relative_error(float y, float x) {
  const double exact = std::exp(static_cast<double>(x));
  return std::abs(static_cast<double>(y) - exact) / exact;
}
constexpr double kTwoUlp = 2.0 / (1 << 23);

TEST(CpuKernel, ExpF32WithinTwoUlpOverTheNormalRange) {
  double worst = 0;
  for (float x : exponents()) worst = std::max(worst, relative_error(cpu::exp_f32(x), x));
  EXPECT_LT(worst, kTwoUlp);
  EXPECT_EQ(cpu::exp_f32(-1000.f), cpu::exp_f32(-87.f));
  EXPECT_EQ(cpu::exp_f32(-INFINITY), cpu::exp_f32(-87.f));
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) void exp16_all(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(y + i, cpu::exp16(_mm512_loadu_ps(x + i)));
}

TEST(CpuKernel, Exp16WithinTwoUlpAndLikeExpF32BelowTheRange) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512";
  auto x = exponents();
  x.resize((x.size() + 15) / 16 * 16, 0.f);
  std::vector<float> y(x.size());
  exp16_all(x.data(), static_cast<int64_t>(x.size()), y.data());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, relative_error(y[i], x[i]));
  EXPECT_LT(worst, kTwoUlp);
  const std::vector<float> edges = {-1000.f, -INFINITY, -87.f, 89.f, 1000.f, INFINITY, 0.f,   1.f,
                                    -1.f,    10.f,      -10.f, 20.f, -20.f,  30.f,     -30.f, NAN};  // 16 lanes
  std::vector<float> out(16);
  exp16_all(edges.data(), 16, out.data());
  EXPECT_EQ(out[0], cpu::exp_f32(-87.f));
  EXPECT_EQ(out[1], cpu::exp_f32(-87.f));
  EXPECT_TRUE(std::isinf(out[3]) && std::isinf(out[4]) && std::isinf(out[5]));
  EXPECT_EQ(out[6], 1.f);
  EXPECT_TRUE(std::isnan(out[15]));
}
#endif

}  // namespace
}  // namespace titan
