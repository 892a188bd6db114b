// The CPU kernels' exp: exp_f32 (every vector width) and the lanes' (AVX-512's 16, AVX2's 8) against float64's
// over fp32's whole normal range, within 2 ulp; below it all give e^-87, above it exp_f32 and AVX2's give e^88,
// AVX-512's inf; NaN stays NaN.
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
// The kernels' lane templates pass vectors by value only once inlined into their flatten functions
// (target AVX-512 or AVX2), where the ABI is the vector one.
#pragma GCC diagnostic ignored "-Wpsabi"
// L::exp over x (n a multiple of L's width) into y.
template <typename L>
void exp_all(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; i += L::kWidth) L::store(y + i, L::exp(L::load(x + i)));
}
TITAN_AVX512 __attribute__((flatten)) void exp16_all(const float* x, int64_t n, float* y) {
  exp_all<cpu::Lanes16>(x, n, y);
}
TITAN_AVX2 __attribute__((flatten)) void exp8_all(const float* x, int64_t n, float* y) {
  exp_all<cpu::Lanes8>(x, n, y);
}

// exp over the normal range, and 16 edge values.
struct LanesExp {
  std::vector<float> x, y, out;
};
LanesExp run_exp(void (*exp_all_fn)(const float*, int64_t, float*)) {
  LanesExp r{exponents(), {}, std::vector<float>(16)};
  r.x.resize((r.x.size() + 15) / 16 * 16, 0.f);
  r.y.resize(r.x.size());
  exp_all_fn(r.x.data(), static_cast<int64_t>(r.x.size()), r.y.data());
  const std::vector<float> edges = {-1000.f, -INFINITY, -87.f, 89.f, 1000.f, INFINITY, 0.f,   1.f,
                                    -1.f,    10.f,      -10.f, 20.f, -20.f,  30.f,     -30.f, NAN};
  exp_all_fn(edges.data(), 16, r.out.data());
  return r;
}
double worst_error(const LanesExp& r) {
  double worst = 0;
  for (size_t i = 0; i < r.x.size(); ++i) worst = std::max(worst, relative_error(r.y[i], r.x[i]));
  return worst;
}

TEST(CpuKernel, Lanes16ExpWithinTwoUlpAndLikeExpF32BelowTheRange) {
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512";
  const auto r = run_exp(exp16_all);
  EXPECT_LT(worst_error(r), kTwoUlp);
  EXPECT_EQ(r.out[0], cpu::exp_f32(-87.f));
  EXPECT_EQ(r.out[1], cpu::exp_f32(-87.f));
  EXPECT_TRUE(std::isinf(r.out[3]) && std::isinf(r.out[4]) && std::isinf(r.out[5]));
  EXPECT_EQ(r.out[6], 1.f);
  EXPECT_TRUE(std::isnan(r.out[15]));
}

TEST(CpuKernel, Lanes8ExpWithinTwoUlpAndEqualToExpF32AtTheEdges) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "this CPU has no AVX2";
  const auto r = run_exp(exp8_all);
  EXPECT_LT(worst_error(r), kTwoUlp);
  EXPECT_TRUE(r.out[0] == r.out[2] && r.out[1] == r.out[2]);  // clamped to e^-87, as exp_f32
  EXPECT_TRUE(r.out[3] == r.out[4] && r.out[5] == r.out[4]);  // clamped to e^88, as exp_f32
  EXPECT_LT(relative_error(r.out[5], 88.f), kTwoUlp);
  EXPECT_EQ(r.out[6], 1.f);
  EXPECT_TRUE(std::isnan(r.out[15]));
}
#endif

}  // namespace
}  // namespace titan
