// Building blocks of the CPU kernels: one clone of a loop per x86 vector width, picked at load time
// for the CPU at hand (the build targets baseline x86-64), and fp32 <-> bf16 loads and stores that
// vectorize. A kernel's loop is an always-inline template called from a cloned function per dtype.
// Kernels written in intrinsics take lane traits instead (Lanes16, Lanes8), picked at run time.
#pragma once

#include "models/common/torch_api.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#define TITAN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TITAN_CPU_CLONES
#endif
#define TITAN_ALWAYS_INLINE inline __attribute__((always_inline))

namespace titan::cpu {

TITAN_ALWAYS_INLINE float load(float v) {
  return v;
}
TITAN_ALWAYS_INLINE double load(double v) {
  return v;
}
TITAN_ALWAYS_INLINE float load(uint16_t bf16) {
  const uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

TITAN_ALWAYS_INLINE void store(float v, float* out) {
  *out = v;
}
TITAN_ALWAYS_INLINE void store(double v, double* out) {
  *out = v;
}
TITAN_ALWAYS_INLINE void store(float v, uint16_t* out) {  // round to nearest even, as c10::BFloat16; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  const auto rounded = static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
  *out = v != v ? uint16_t{0x7fc0} : rounded;
}

// exp_f32's and the lanes' exp's terms: ln2 split in two (n * hi is exact), e^r's Taylor coefficients 1/7! .. 1/0!
// (exp_f32), and the lanes': libtorch's for its CPU flash attention's exp (exp_u20), a degree-5 polynomial fitted
// to e^r on |r| <= ln2/2 (0.77 ulp from e^r there; c5 .. c0).
namespace exp_terms {
constexpr float log2e = 1.44269504f, ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-6f;
constexpr float taylor[8] = {1.f / 5040, 1.f / 720, 1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f};
constexpr float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer, branch-free
constexpr float minimax5[6] = {0.00828929059f, 0.0418978221f, 0.166676521f, 0.499991506f, 0.999999701f, 1.f};
}  // namespace exp_terms

// e^x in fp32 without branches, so loops over it vectorize: x = n ln2 + r with |r| <= ln2/2, e^r by
// its degree-7 Taylor polynomial (truncation 5e-9, below fp32's rounding), 2^n built in the exponent bits.
// x is clamped to [-87, 88], where 2^n stays a normal float. A loop calling it vectorizes on AVX2 only
// in a file built with -fno-trapping-math (CMakeLists.txt: the clamps stay branches otherwise).
TITAN_ALWAYS_INLINE float exp_f32(float x) {
  using namespace exp_terms;
  x = std::min(std::max(x, -87.f), 88.f);
  const float n = (x * log2e + shifter) - shifter;
  const float r = (x - n * ln2_hi) - n * ln2_lo;
  float p = taylor[0];
  for (int i = 1; i < 8; ++i) p = p * r + taylor[i];
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define TITAN_AVX512 __attribute__((target("avx512f")))
#define TITAN_AVX2 __attribute__((target("avx2,fma")))

// One register's fp32 lanes, for kernels written once for AVX-512 (Lanes16) and AVX2 (Lanes8): a
// kernel's body is a template on them, called from a `flatten` function of their target. GCC inlines
// intrinsics only into a function of their own target, so nothing here is forced inline: flatten
// inlines it all where the target matches. Mask: lanes chosen by first(n), the lanes below n.
struct Lanes16 {
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int kWidth = 16;
  TITAN_AVX512 static V zero() { return _mm512_setzero_ps(); }
  TITAN_AVX512 static V set1(float x) { return _mm512_set1_ps(x); }
  TITAN_AVX512 static V load(const float* p) { return _mm512_loadu_ps(p); }
  TITAN_AVX512 static void store(float* p, V x) { _mm512_storeu_ps(p, x); }
  TITAN_AVX512 static V add(V a, V b) { return _mm512_add_ps(a, b); }
  TITAN_AVX512 static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  TITAN_AVX512 static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  TITAN_AVX512 static V fmsub(V a, V b, V c) { return _mm512_fmsub_ps(a, b, c); }  // a b - c
  TITAN_AVX512 static V max(V a, V b) { return _mm512_max_ps(a, b); }
  TITAN_AVX512 static Mask first(int n) { return static_cast<Mask>((1u << std::clamp(n, 0, kWidth)) - 1); }
  TITAN_AVX512 static V keep(Mask m, V x) { return _mm512_maskz_mov_ps(m, x); }             // x on m, 0 elsewhere
  TITAN_AVX512 static V select(Mask m, V x, V y) { return _mm512_mask_blend_ps(m, y, x); }  // x on m, y elsewhere
  TITAN_AVX512 static float reduce_max(V x) { return _mm512_reduce_max_ps(x); }
  TITAN_AVX512 static float reduce_add(V x) { return _mm512_reduce_add_ps(x); }
  // e^x for softmax's shifted scores (x <= 0) within 2 ulp, as exp_f32 but by exp_terms::minimax5 and with 2^n
  // applied by vscalefps; e^-87 below -87, valid to 88.7, NaN stays NaN (the clamp keeps x, its second operand).
  TITAN_AVX512 static V exp(V x) {
    using namespace exp_terms;
    x = _mm512_max_ps(_mm512_set1_ps(-87.f), x);
    const V n =
        _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(log2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const V r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_hi), x));
    V p = _mm512_set1_ps(minimax5[0]);
    for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(minimax5[i]));
    return _mm512_scalef_ps(p, n);
  }
};

struct Lanes8 {
  using V = __m256;
  using Mask = __m256;  // all ones on the chosen lanes
  static constexpr int kWidth = 8;
  TITAN_AVX2 static V zero() { return _mm256_setzero_ps(); }
  TITAN_AVX2 static V set1(float x) { return _mm256_set1_ps(x); }
  TITAN_AVX2 static V load(const float* p) { return _mm256_loadu_ps(p); }
  TITAN_AVX2 static void store(float* p, V x) { _mm256_storeu_ps(p, x); }
  TITAN_AVX2 static V add(V a, V b) { return _mm256_add_ps(a, b); }
  TITAN_AVX2 static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  TITAN_AVX2 static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  TITAN_AVX2 static V fmsub(V a, V b, V c) { return _mm256_fmsub_ps(a, b, c); }  // a b - c
  TITAN_AVX2 static V max(V a, V b) { return _mm256_max_ps(a, b); }
  TITAN_AVX2 static Mask first(int n) {
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  TITAN_AVX2 static V keep(Mask m, V x) { return _mm256_and_ps(m, x); }
  TITAN_AVX2 static V select(Mask m, V x, V y) { return _mm256_blendv_ps(y, x, m); }
  TITAN_AVX2 static float reduce_max(V x) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
  }
  TITAN_AVX2 static float reduce_add(V x) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  // Lanes16::exp on 8 lanes, valid up to 88: n rounded by adding exp_terms::shifter + 127, whose bits, shifted up,
  // are 2^n. A softmax row's loop: 1.2x the same with exp_f32's terms (Taylor's degree 7, two FMAs more).
  TITAN_AVX2 static V exp(V x) {
    using namespace exp_terms;
    const V biased_shifter = _mm256_set1_ps(shifter + 127.f);  // the sum's low bits hold n + 127
    x = _mm256_max_ps(_mm256_set1_ps(-87.f), x);
    const V biased = _mm256_fmadd_ps(x, _mm256_set1_ps(log2e), biased_shifter);
    const V n = _mm256_sub_ps(biased, biased_shifter);
    const V r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_hi), x));
    V p = _mm256_set1_ps(minimax5[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(minimax5[i]));
    return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(biased), 23)));
  }
};
#endif

// n bf16 values widened (exactly) to fp32: loops that mix 16-bit loads with wider arithmetic did not
// vectorize, so kernels widen a chunk first and run their fp32 loop on it.
TITAN_ALWAYS_INLINE void widen(const uint16_t* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = load(x[i]);
}

// A tensor's elements from `offset` on, as the kernels' storage type (uint16_t for bf16).
template <typename T>
const T* ptr(const torch::Tensor& t, int64_t offset = 0) {
  return reinterpret_cast<const T*>(t.data_ptr()) + offset;
}
template <typename T>
T* mutable_ptr(const torch::Tensor& t, int64_t offset = 0) {
  return reinterpret_cast<T*>(t.data_ptr()) + offset;
}

// The sum of f(k) over k < n in Acc, in 16 running sums so the loop vectorizes without reordering a sum.
template <typename Acc, typename F>
TITAN_ALWAYS_INLINE Acc sum16(int64_t n, const F& f) {
  Acc acc[16] = {};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; ++l) acc[l] += f(k + l);
  for (; k < n; ++k) acc[0] += f(k);
  for (int width = 8; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  return acc[0];
}

// The largest of x[0..n) (n > 0), in 16 running maxima held as two 8-lane vectors (GCC kept 16
// scalar maxima in scalar registers: one vmaxss per element).
TITAN_ALWAYS_INLINE float max16(const float* x, int64_t n) {
  typedef float Lanes __attribute__((vector_size(32)));
  Lanes m0, m1;
  for (int l = 0; l < 8; ++l) m0[l] = m1[l] = x[0];
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    Lanes a, b;
    std::memcpy(&a, x + k, sizeof a);
    std::memcpy(&b, x + k + 8, sizeof b);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  float m = m0[0];
  for (int l = 1; l < 8; ++l) m = std::max(m, m0[l]);
  for (; k < n; ++k) m = std::max(m, x[k]);
  return m;
}

}  // namespace titan::cpu
