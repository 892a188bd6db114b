// The CPU kernels' exp: exp_f32 (every vector width) and the lanes' (AVX-512's 16, AVX2's 8) against float64's
// over fp32's whole normal range, within 2 ulp; below it all give e^-87, above it exp_f32 gives e^88 (the lanes'
// go to 88 only); NaN stays NaN, and the lanes' e^0 is 1. The lanes' masks (first n lanes, for n below 0 to past the
// width) and reductions against hand-computed values. test_avx512_emulated.py also runs the Lanes16 cases'
// functions on an emulated AVX-512 CPU, so machines without AVX-512 check them too.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "models/common/cpu_kernel.h"
#include "models/common/torch_api.h"

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
// The lane templates' vectors pass by value only inlined into their flatten functions (of the lanes' target).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
// L::exp over x (n a multiple of L's width) into y.
template <typename L>
void exp_all(const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; i += L::kWidth) L::store(y + i, L::exp(L::load(x + i)));
}

// Lane counts the masks are asked for: none, some, all, more than all.
constexpr int kCounts[] = {-3, 0, 1, 7, 8, 9, 16, 17, 128};
constexpr int kNumCounts = sizeof kCounts / sizeof kCounts[0];

// What the kernels mask and reduce with, on L: per count n a row of keep(first(n), 1) and one of
// select(first(n), 1, 2); then reduce_max and reduce_add of 1..width, reduce_max of -(l - width/2)^2
// (largest in a middle lane) and reduce_max with every lane -inf but one.
template <typename L>
void lane_ops(float* keep_rows, float* select_rows, float* reduced) {
  for (int i = 0; i < kNumCounts; ++i) {
    L::store(keep_rows + i * L::kWidth, L::keep(L::first(kCounts[i]), L::set1(1.f)));
    L::store(select_rows + i * L::kWidth, L::select(L::first(kCounts[i]), L::set1(1.f), L::set1(2.f)));
  }
  float ramp[16], hill[16], spike[16];
  for (int l = 0; l < 16; ++l) {
    ramp[l] = l + 1.f;
    hill[l] = -static_cast<float>((l - L::kWidth / 2) * (l - L::kWidth / 2));
    spike[l] = l == 3 ? 7.f : -INFINITY;
  }
  reduced[0] = L::reduce_max(L::load(ramp));
  reduced[1] = L::reduce_add(L::load(ramp));
  reduced[2] = L::reduce_max(L::load(hill));
  reduced[3] = L::reduce_max(L::load(spike));
}
#pragma GCC diagnostic pop

TITAN_AVX512 __attribute__((flatten)) void exp16_all(const float* x, int64_t n, float* y) {
  exp_all<cpu::Lanes16>(x, n, y);
}
TITAN_AVX2 __attribute__((flatten)) void exp8_all(const float* x, int64_t n, float* y) {
  exp_all<cpu::Lanes8>(x, n, y);
}
TITAN_AVX512 __attribute__((flatten)) void lane_ops16(float* keep_rows, float* select_rows, float* reduced) {
  lane_ops<cpu::Lanes16>(keep_rows, select_rows, reduced);
}
TITAN_AVX2 __attribute__((flatten)) void lane_ops8(float* keep_rows, float* select_rows, float* reduced) {
  lane_ops<cpu::Lanes8>(keep_rows, select_rows, reduced);
}

bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// exp over the normal range, and 16 edge values: below it, -87, 0 and NaN (0, 1, 2, 6, 15), the rest inside it.
struct LanesExp {
  std::vector<float> x, y, out;
};
const std::vector<float> kEdges = {-1000.f, -INFINITY, -87.f, 88.f, 50.f,  -50.f, 0.f,   1.f,
                                   -1.f,    10.f,      -10.f, 20.f, -20.f, 30.f,  -30.f, NAN};
LanesExp run_exp(void (*exp_all_fn)(const float*, int64_t, float*)) {
  LanesExp r{exponents(), {}, std::vector<float>(16)};
  r.x.resize((r.x.size() + 15) / 16 * 16, 0.f);
  r.y.resize(r.x.size());
  exp_all_fn(r.x.data(), static_cast<int64_t>(r.x.size()), r.y.data());
  exp_all_fn(kEdges.data(), 16, r.out.data());
  return r;
}
double worst_error(const LanesExp& r) {
  double worst = 0;
  for (size_t i = 0; i < r.x.size(); ++i) worst = std::max(worst, relative_error(r.y[i], r.x[i]));
  return worst;
}

// The masks and reductions of lanes `width` wide, run by lane_ops_fn.
void expect_lane_ops(void (*lane_ops_fn)(float*, float*, float*), int width) {
  std::vector<float> keep_rows(kNumCounts * width), select_rows(kNumCounts * width), reduced(4);
  lane_ops_fn(keep_rows.data(), select_rows.data(), reduced.data());
  for (int i = 0; i < kNumCounts; ++i)
    for (int l = 0; l < width; ++l) {
      EXPECT_EQ(keep_rows[i * width + l], l < kCounts[i] ? 1.f : 0.f) << "first(" << kCounts[i] << "), lane " << l;
      EXPECT_EQ(select_rows[i * width + l], l < kCounts[i] ? 1.f : 2.f) << "first(" << kCounts[i] << "), lane " << l;
    }
  EXPECT_EQ(reduced[0], static_cast<float>(width));
  EXPECT_EQ(reduced[1], static_cast<float>(width * (width + 1) / 2));
  EXPECT_EQ(reduced[2], 0.f);
  EXPECT_EQ(reduced[3], 7.f);
}

TEST(CpuKernel, Lanes16MasksAndReductions) {
  if (!__builtin_cpu_supports("avx512f"))
    GTEST_SKIP() << "this CPU has no AVX-512 (unit.avx512_emulated runs it emulated)";
  expect_lane_ops(lane_ops16, 16);
}

TEST(CpuKernel, Lanes8MasksAndReductions) {
  if (!has_avx2()) GTEST_SKIP() << "this CPU has no AVX2";
  expect_lane_ops(lane_ops8, 8);
}

// The lanes' exp over [-87, 88] and below it.
void expect_lanes_exp(void (*exp_all_fn)(const float*, int64_t, float*)) {
  const auto r = run_exp(exp_all_fn);
  EXPECT_LT(worst_error(r), kTwoUlp);
  EXPECT_TRUE(r.out[0] == r.out[2] && r.out[1] == r.out[2]);  // below -87: e^-87
  for (int i = 2; i < 15; ++i) EXPECT_LT(relative_error(r.out[i], kEdges[i]), kTwoUlp) << "e^" << kEdges[i];
  EXPECT_EQ(r.out[6], 1.f);
  EXPECT_TRUE(std::isnan(r.out[15]));
}

TEST(CpuKernel, Lanes16ExpWithinTwoUlpUpTo88AndE87BelowTheRange) {
  if (!__builtin_cpu_supports("avx512f"))
    GTEST_SKIP() << "this CPU has no AVX-512 (unit.avx512_emulated runs it emulated)";
  expect_lanes_exp(exp16_all);
}

TEST(CpuKernel, Lanes8ExpWithinTwoUlpUpTo88AndE87BelowTheRange) {
  if (!has_avx2()) GTEST_SKIP() << "this CPU has no AVX2";
  expect_lanes_exp(exp8_all);
}
#endif

}  // namespace
}  // namespace titan
