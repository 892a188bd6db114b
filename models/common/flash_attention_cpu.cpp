#include "models/common/flash_attention_cpu.h"

#include <atomic>

// fbgemm's transpose and AVX512-BF16's rounding: x86-64 with a libtorch that ships fbgemm only
// (elsewhere SDPA's forward and backward run).
#if defined(__x86_64__) && defined(__GNUC__) && __has_include(<fbgemm/Utils.h>)
#define TITAN_FLASH_ATTENTION_CPU
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <fbgemm/Utils.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "models/common/cpu_kernel.h"
#endif

namespace titan {
namespace {
std::atomic<FlashIsa> g_isa{FlashIsa::kWidest};
}  // namespace

void set_flash_isa(FlashIsa isa) {
  g_isa.store(isa);
}
FlashIsa flash_isa() {
  return g_isa.load();
}

#ifdef TITAN_FLASH_ATTENTION_CPU
namespace {

namespace blas = at::native::cpublas;
using bf16 = at::BFloat16;
constexpr int64_t kBlock = 128;  // query and key rows of one block product

// One head's (T, hd) rows in a (B, heads, T, hd) tensor whose last dim is contiguous.
template <typename T>
struct HeadRows {
  const T* p;
  int64_t stride;
  const T* row(int64_t t) const { return p + t * stride; }
};
template <typename T>
HeadRows<T> head_rows(const torch::Tensor& x, int64_t b, int64_t h) {
  return {x.data_ptr<T>() + b * x.stride(0) + h * x.stride(1), x.stride(2)};
}

// A block product's second operand (K, N) as brgemm reads it: bf16 packed into oneDNN's layout (a
// copy in `packed`, K x N), fp32 read in place, rows `ld` apart.
template <typename T>
struct Operand {
  const T* p;
  int64_t ld;
};

// oneDNN packs brgemm's bf16 second operand in column blocks of at most 64 (leading dimension 16, 32, 48 or 64).
constexpr int64_t kPackN = 64;

Operand<bf16> operand(const bf16* src, int64_t ld, int64_t K, int64_t N, bf16* packed) {
  for (int64_t n0 = 0; n0 < N; n0 += kPackN) {
    const int64_t w = std::min(kPackN, N - n0);
    blas::pack(K, w, ld, w, at::kBFloat16, at::kBFloat16, src + n0, packed + n0 * K);
  }
  return {packed, 0};
}
Operand<float> operand(const float* src, int64_t ld, int64_t, int64_t, float*) {
  return {src, ld};
}

// c (M, N), rows ld_c apart, = (or += with `add`) a (M, K), rows ld_a apart, times b (K, N).
void gemm(int64_t M, int64_t N, int64_t K, const bf16* a, int64_t ld_a, Operand<bf16> b, float* c, int64_t ld_c,
          bool add) {
  for (int64_t n0 = 0; n0 < N; n0 += kPackN) {
    const int64_t w = std::min(kPackN, N - n0);
    blas::brgemm(M, w, K, ld_a, w, ld_c, add, a, b.p + n0 * K, c + n0);
  }
}
void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t ld_a, Operand<float> b, float* c, int64_t ld_c,
          bool add) {
  blas::brgemm(M, N, K, ld_a, b.ld, ld_c, add, a, b.p, c, /*is_vnni=*/false);
}

// Every key block j's second operand (K, N), rows `ld` apart from src + j * step: bf16 packed into `packed`
// (K x N per block), fp32 read in place (`packed` empty).
template <typename T>
void key_block_operands(const T* src, int64_t step, int64_t ld, int64_t K, int64_t N, std::vector<T>& packed,
                        std::vector<Operand<T>>& ops) {
  for (size_t j = 0; j < ops.size(); ++j)
    ops[j] = operand(src + j * step, ld, K, N, packed.empty() ? nullptr : &packed[j * K * N]);
}

// n rows of hd, rows `ld` apart, transposed into t (hd, n): fbgemm's SIMD transpose, as libtorch's
// own CPU kernels use it (a scalar loop took half the time outside the block products).
void transpose(const bf16* src, int64_t ld, int64_t n, int64_t hd, bf16* t) {
  fbgemm::transpose_simd<uint16_t>(n, hd, reinterpret_cast<const uint16_t*>(src), ld, reinterpret_cast<uint16_t*>(t),
                                   n);
}
void transpose(const float* src, int64_t ld, int64_t n, int64_t hd, float* t) {
  fbgemm::transpose_simd<float>(n, hd, src, ld, t, n);
}

// A head's `rows` rows, copied densely into `buffer` (rows, hd) where they are strided (the model hands q, k, v
// and dO over as (B, T, H, hd) transposed): every key block's products read them again.
template <typename T>
HeadRows<T> dense_rows(HeadRows<T> x, int64_t rows, int64_t hd, std::vector<T>& buffer) {
  if (x.stride == hd) return x;
  for (int64_t t = 0; t < rows; ++t) std::copy(x.row(t), x.row(t) + hd, &buffer[t * hd]);
  return {buffer.data(), hd};
}

// A head's first `blocks` row blocks (kBlock, hd), each transposed into out (hd, kBlock), one after another.
template <typename T>
void transpose_blocks(HeadRows<T> x, int64_t blocks, int64_t hd, T* out) {
  for (int64_t j = 0; j < blocks; ++j) transpose(x.row(j * kBlock), x.stride, kBlock, hd, out + j * hd * kBlock);
}

// x (n floats, n a multiple of 32) rounded to bf16, to nearest even, by AVX512-BF16's conversion (every CPU
// with AMX has it; it reads denormals as 0): written as cpu::store, it was a third of the element-wise work below.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void store(const float* x, int64_t n, bf16* out) {
  for (int64_t i = 0; i < n; i += 32)
    _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
}

// How many of key block k0's keys query q0 + a sees: keys k0 .. q0 + a where causal, else all.
TITAN_ALWAYS_INLINE int visible_keys(bool causal, int64_t q0, int64_t k0, int a) {
  return causal ? static_cast<int>(std::clamp<int64_t>(q0 + a - k0 + 1, 0, kBlock)) : kBlock;
}

bool widest() {
  return g_isa.load(std::memory_order_relaxed) == FlashIsa::kWidest;
}

// AVX-512's 16 lanes where the CPU has them (and the ISA is not narrowed), else AVX2's 8 (flash_supported
// asks for one of the two).
bool has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && widest();
}

// One block pair's P = exp(S scale - lse), 0 for keys after the query where causal (zeroed: the vectors
// past a row's last visible key are not exponentiated), and dS = P (dP - D) scale, both stored as T (kBlock, kBlock)
// row-major (bf16 through fp32 rows rounded by `store`). s, dp (kBlock, kBlock) fp32; lse, d: the block's queries'; q0,
// k0: the first query's and key's positions. On L's lanes (the flatten functions below). The lane templates' vectors
// pass by value only inlined into their flatten functions (of the lanes' target).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
template <typename L, typename T>
void probs_and_grads_on(const float* s, const float* dp, const float* lse, const float* d, float scale, bool causal,
                        int64_t q0, int64_t k0, T* p, T* ds) {
  using V = typename L::V;
  constexpr bool rounds = std::is_same_v<T, bf16>;
  alignas(64) float p_row[kBlock], ds_row[kBlock];
  const V vscale = L::set1(scale);
  for (int a = 0; a < kBlock; ++a) {
    const int visible = visible_keys(causal, q0, k0, a);
    const int whole = visible / L::kWidth * L::kWidth;  // the lanes before it all visible: no masks
    const V l = L::set1(lse[a]), d_scaled = L::set1(d[a] * scale);
    const float *sa = s + a * kBlock, *dpa = dp + a * kBlock;
    float* pa = rounds ? p_row : reinterpret_cast<float*>(p) + a * kBlock;
    float* dsa = rounds ? ds_row : reinterpret_cast<float*>(ds) + a * kBlock;
    // P = exp(S scale - lse), dS = P (dP scale - D scale)
    const auto probs = [&](int c) { return L::exp(L::fmsub(L::load(sa + c), vscale, l)); };
    const auto grads = [&](int c, V pc) { return L::mul(pc, L::fmsub(L::load(dpa + c), vscale, d_scaled)); };
    int c = 0;
    for (; c < whole; c += L::kWidth) {
      const V pc = probs(c);
      L::store(pa + c, pc);
      L::store(dsa + c, grads(c, pc));
    }
    if (c < visible) {
      const auto keep = L::first(visible - c);
      const V pc = L::keep(keep, probs(c));
      L::store(pa + c, pc);
      L::store(dsa + c, L::keep(keep, grads(c, pc)));
      c += L::kWidth;
    }
    for (; c < kBlock; c += L::kWidth) {
      L::store(pa + c, L::zero());
      L::store(dsa + c, L::zero());
    }
    if constexpr (rounds) {
      store(p_row, kBlock, p + a * kBlock);
      store(ds_row, kBlock, ds + a * kBlock);
    }
  }
}
#pragma GCC diagnostic pop
// probs_and_grads_on compiled for each lane width, and the one the CPU takes: bf16 runs only where bf16_ok
// (AMX and AVX512-BF16), so only on 16 lanes.
template <typename T>
TITAN_AVX512 __attribute__((flatten)) void probs_and_grads16(const float* s, const float* dp, const float* lse,
                                                             const float* d, float scale, bool causal, int64_t q0,
                                                             int64_t k0, T* p, T* ds) {
  probs_and_grads_on<cpu::Lanes16>(s, dp, lse, d, scale, causal, q0, k0, p, ds);
}
TITAN_AVX2 __attribute__((flatten)) void probs_and_grads8(const float* s, const float* dp, const float* lse,
                                                          const float* d, float scale, bool causal, int64_t q0,
                                                          int64_t k0, float* p, float* ds) {
  probs_and_grads_on<cpu::Lanes8>(s, dp, lse, d, scale, causal, q0, k0, p, ds);
}
void probs_and_grads(const float* s, const float* dp, const float* lse, const float* d, float scale, bool causal,
                     int64_t q0, int64_t k0, bf16* p, bf16* ds) {
  probs_and_grads16(s, dp, lse, d, scale, causal, q0, k0, p, ds);
}
void probs_and_grads(const float* s, const float* dp, const float* lse, const float* d, float scale, bool causal,
                     int64_t q0, int64_t k0, float* p, float* ds) {
  (has_avx512() ? probs_and_grads16<float> : probs_and_grads8)(s, dp, lse, d, scale, causal, q0, k0, p, ds);
}

// D = rowsum(dO * O) of a head's `rows` rows, in fp32.
template <typename Bits>
TITAN_ALWAYS_INLINE void row_dots_loop(const Bits* g, int64_t g_stride, const Bits* o, int64_t o_stride, int64_t rows,
                                       int64_t hd, float* d) {
  for (int64_t t = 0; t < rows; ++t) {
    const Bits* gt = g + t * g_stride;
    const Bits* ot = o + t * o_stride;
    d[t] = cpu::sum16<float>(hd, [&](int64_t c) { return cpu::load(gt[c]) * cpu::load(ot[c]); });
  }
}
TITAN_CPU_CLONES void row_dots(HeadRows<bf16> g, HeadRows<bf16> o, int64_t rows, int64_t hd, float* d) {
  row_dots_loop(reinterpret_cast<const uint16_t*>(g.p), g.stride, reinterpret_cast<const uint16_t*>(o.p), o.stride,
                rows, hd, d);
}
TITAN_CPU_CLONES void row_dots(HeadRows<float> g, HeadRows<float> o, int64_t rows, int64_t hd, float* d) {
  row_dots_loop(g.p, g.stride, o.p, o.stride, rows, hd, d);
}

// x (rows, hd) fp32 stored as T into rows `ld` apart (the gradients take their input's layout, so the
// model's transposed views need no copy after): bf16 rounded through `dense` (rows, hd) where they are strided.
void store_rows(const float* x, int64_t rows, int64_t hd, bf16* out, int64_t ld, std::vector<bf16>& dense) {
  if (ld == hd) return store(x, rows * hd, out);
  store(x, rows * hd, dense.data());
  for (int64_t t = 0; t < rows; ++t) std::copy(&dense[t * hd], &dense[(t + 1) * hd], out + t * ld);
}
void store_rows(const float* x, int64_t rows, int64_t hd, float* out, int64_t ld, std::vector<float>&) {
  for (int64_t t = 0; t < rows; ++t) std::copy(x + t * hd, x + (t + 1) * hd, out + t * ld);
}

// (hd, rows) fp32 transposed into T rows `ld` apart: bf16 through `scratch` (rows, hd) and rounded.
void store_transposed(const float* acc_t, int64_t rows, int64_t hd, float* scratch, bf16* out, int64_t ld,
                      std::vector<bf16>& dense) {
  fbgemm::transpose_simd<float>(hd, rows, acc_t, rows, scratch, hd);
  store_rows(scratch, rows, hd, out, ld, dense);
}
void store_transposed(const float* acc_t, int64_t rows, int64_t hd, float*, float* out, int64_t ld,
                      std::vector<float>&) {
  fbgemm::transpose_simd<float>(hd, rows, acc_t, rows, out, ld);
}

// The backward in T (bf16 or float) on checked, row-contiguous tensors; lse fp32.
template <typename T>
void backward(const torch::Tensor& g, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
              const torch::Tensor& o, const torch::Tensor& lse, bool causal, torch::Tensor& dq, torch::Tensor& dk,
              torch::Tensor& dv) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), hd = q.size(3), KV = k.size(1),
                rep = H / KV;
  const int64_t q_blocks = Tq / kBlock, k_blocks = Tk / kBlock;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  constexpr bool packs = std::is_same_v<T, bf16>;  // fp32 operands are read in place, bf16 ones packed
  at::parallel_for(0, B * KV, 1, [&](int64_t begin, int64_t end) {
    const int64_t block = hd * kBlock;  // one (kBlock, hd) block, or its transpose
    const int64_t packed_keys = packs ? Tk * hd : 0, packed_block = packs ? kBlock * kBlock : 0;
    std::vector<T> kt(Tk * hd), vt(Tk * hd), qt(Tq * hd), got(Tq * hd);  // per block: K_j^T, V_j^T, Q_i^T, dO_i^T
    std::vector<T> kt_packed(packed_keys), vt_packed(packed_keys), k_packed(packed_keys);
    std::vector<Operand<T>> kt_op(k_blocks), vt_op(k_blocks), k_op(k_blocks);
    std::vector<T> p(kBlock * kBlock), ds(kBlock * kBlock), p_packed(packed_block), ds_packed(packed_block);
    std::vector<float> s(kBlock * kBlock), dp(kBlock * kBlock), lse_rows(Tq), d_rows(Tq);
    std::vector<float> dq_acc(Tq * hd), dkt_acc(hd * Tk), dvt_acc(hd * Tk);  // dq (Tq, hd); dk, dv transposed (hd, Tk)
    std::vector<float> scratch(packs ? Tk * hd : 0);
    std::vector<T> k_rows(Tk * hd), q_rows(Tq * hd), g_rows(Tq * hd);  // strided heads' rows, made dense
    std::vector<T> out_rows(std::max(Tq, Tk) * hd);                    // a gradient's rows before a strided store
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / KV, kv = item % KV;
      const HeadRows<T> kr = dense_rows(head_rows<T>(k, b, kv), Tk, hd, k_rows), vr = head_rows<T>(v, b, kv);
      transpose_blocks(kr, k_blocks, hd, kt.data());
      transpose_blocks(vr, k_blocks, hd, vt.data());
      key_block_operands(kt.data(), block, kBlock, hd, kBlock, kt_packed, kt_op);           // K_j^T (hd, kBlock)
      key_block_operands(vt.data(), block, kBlock, hd, kBlock, vt_packed, vt_op);           // V_j^T (hd, kBlock)
      key_block_operands(kr.p, kBlock * kr.stride, kr.stride, kBlock, hd, k_packed, k_op);  // K_j (kBlock, hd)
      std::fill(dkt_acc.begin(), dkt_acc.end(), 0.f);
      std::fill(dvt_acc.begin(), dvt_acc.end(), 0.f);
      for (int64_t r = 0; r < rep; ++r) {
        const int64_t h = kv * rep + r;
        const HeadRows<T> qr = dense_rows(head_rows<T>(q, b, h), Tq, hd, q_rows),
                          gr = dense_rows(head_rows<T>(g, b, h), Tq, hd, g_rows), orows = head_rows<T>(o, b, h);
        const float* lse_head = lse.data_ptr<float>() + b * lse.stride(0) + h * lse.stride(1);
        for (int64_t t = 0; t < Tq; ++t) lse_rows[t] = lse_head[t * lse.stride(2)];
        row_dots(gr, orows, Tq, hd, d_rows.data());
        transpose_blocks(qr, q_blocks, hd, qt.data());   // Q_i^T (hd, kBlock)
        transpose_blocks(gr, q_blocks, hd, got.data());  // dO_i^T (hd, kBlock)
        std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
        for (int64_t i = 0; i < q_blocks; ++i)
          for (int64_t j = 0; j < (causal ? i + 1 : k_blocks); ++j) {
            // S = Q_i K_j^T, dP = dO_i V_j^T: (kBlock, kBlock)
            gemm(kBlock, kBlock, hd, qr.row(i * kBlock), qr.stride, kt_op[j], s.data(), kBlock, false);
            gemm(kBlock, kBlock, hd, gr.row(i * kBlock), gr.stride, vt_op[j], dp.data(), kBlock, false);
            probs_and_grads(s.data(), dp.data(), &lse_rows[i * kBlock], &d_rows[i * kBlock], scale, causal, i * kBlock,
                            j * kBlock, p.data(), ds.data());
            const auto p_op = operand(p.data(), kBlock, kBlock, kBlock, p_packed.data());
            const auto ds_op = operand(ds.data(), kBlock, kBlock, kBlock, ds_packed.data());
            // dV^T_j += dO_i^T P, dK^T_j += Q_i^T dS: (hd, kBlock) columns of (hd, Tk); dQ_i += dS K_j
            gemm(hd, kBlock, kBlock, &got[i * block], kBlock, p_op, &dvt_acc[j * kBlock], Tk, true);
            gemm(hd, kBlock, kBlock, &qt[i * block], kBlock, ds_op, &dkt_acc[j * kBlock], Tk, true);
            gemm(kBlock, hd, kBlock, ds.data(), kBlock, k_op[j], &dq_acc[i * kBlock * hd], hd, true);
          }
        store_rows(dq_acc.data(), Tq, hd, dq.data_ptr<T>() + b * dq.stride(0) + h * dq.stride(1), dq.stride(2),
                   out_rows);
      }
      store_transposed(dkt_acc.data(), Tk, hd, scratch.data(), dk.data_ptr<T>() + b * dk.stride(0) + kv * dk.stride(1),
                       dk.stride(2), out_rows);
      store_transposed(dvt_acc.data(), Tk, hd, scratch.data(), dv.data_ptr<T>() + b * dv.stride(0) + kv * dv.stride(1),
                       dv.stride(2), out_rows);
    }
    blas::brgemm_release(/*is_vnni=*/packs);
  });
}

// One online-softmax step of a query block over key block k0: s (kBlock, kBlock) its scores Q_i K_j^T;
// each row's running max m (of the scaled scores) and sum l advance, its output accumulator acc
// (kBlock, hd) is rescaled by exp(m_old - m_new), and p = exp(s scale - m_new) is written (0 for keys
// after the query where causal: zeroed, and the vectors past a row's last visible key not exponentiated). On L's lanes
// (the flatten functions below).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // as probs_and_grads_on
template <typename L>
void softmax_step_on(const float* s, float scale, bool causal, int64_t q0, int64_t k0, int64_t hd, float* m, float* l,
                     float* acc, float* p) {
  using V = typename L::V;
  const V vscale = L::set1(scale);
  for (int a = 0; a < kBlock; ++a) {
    const int visible = visible_keys(causal, q0, k0, a);  // at least 1: causal blocks are at or below the diagonal
    const int whole = visible / L::kWidth * L::kWidth;    // the lanes before it all visible: no masks
    const float* sa = s + a * kBlock;
    float* pa = p + a * kBlock;
    V top = L::set1(-std::numeric_limits<float>::infinity());
    for (int c = 0; c < whole; c += L::kWidth) top = L::max(top, L::load(sa + c));
    if (whole < visible) top = L::select(L::first(visible - whole), L::max(top, L::load(sa + whole)), top);
    const float m_new = std::max(m[a], L::reduce_max(top) * scale);
    const V shift = L::set1(m_new);
    const auto probs = [&](int c) { return L::exp(L::fmsub(L::load(sa + c), vscale, shift)); };
    V sum = L::zero();
    int c = 0;
    for (; c < whole; c += L::kWidth) {
      const V pc = probs(c);
      L::store(pa + c, pc);
      sum = L::add(sum, pc);
    }
    if (c < visible) {
      const V pc = L::keep(L::first(visible - c), probs(c));
      L::store(pa + c, pc);
      sum = L::add(sum, pc);
      c += L::kWidth;
    }
    for (; c < kBlock; c += L::kWidth) L::store(pa + c, L::zero());
    // exp(-inf) clamps to e^-87 on the first block, where l and acc are still 0
    const float correction = cpu::exp_f32(m[a] - m_new);
    l[a] = l[a] * correction + L::reduce_add(sum);
    m[a] = m_new;
    float* acc_a = acc + a * hd;
    if (correction != 1.f)
      for (int64_t e = 0; e < hd; ++e) acc_a[e] *= correction;
  }
}
#pragma GCC diagnostic pop
TITAN_AVX512 __attribute__((flatten)) void softmax_step16(const float* s, float scale, bool causal, int64_t q0,
                                                          int64_t k0, int64_t hd, float* m, float* l, float* acc,
                                                          float* p) {
  softmax_step_on<cpu::Lanes16>(s, scale, causal, q0, k0, hd, m, l, acc, p);
}
TITAN_AVX2 __attribute__((flatten)) void softmax_step8(const float* s, float scale, bool causal, int64_t q0, int64_t k0,
                                                       int64_t hd, float* m, float* l, float* acc, float* p) {
  softmax_step_on<cpu::Lanes8>(s, scale, causal, q0, k0, hd, m, l, acc, p);
}
void softmax_step(const float* s, float scale, bool causal, int64_t q0, int64_t k0, int64_t hd, float* m, float* l,
                  float* acc, float* p) {
  (has_avx512() ? softmax_step16 : softmax_step8)(s, scale, causal, q0, k0, hd, m, l, acc, p);
}

// A query block's output rows acc / l into out (kBlock, hd) and log-sum-exp m + log(l).
TITAN_CPU_CLONES void finish_rows(const float* acc, const float* m, const float* l, int64_t hd, float* out,
                                  float* lse) {
  for (int a = 0; a < kBlock; ++a) {
    const float inv = 1.f / l[a];
    for (int64_t c = 0; c < hd; ++c) out[a * hd + c] = acc[a * hd + c] * inv;
    lse[a] = m[a] + std::log(l[a]);
  }
}

// P (kBlock, kBlock) fp32 as the product P V_j's first operand: as it is, or rounded to bf16 into `rounded`.
const float* first_operand(const std::vector<float>& p, std::vector<float>&) {
  return p.data();
}
const bf16* first_operand(const std::vector<float>& p, std::vector<bf16>& rounded) {
  store(p.data(), static_cast<int64_t>(p.size()), rounded.data());
  return rounded.data();
}

// The forward in T (bf16 or float) on checked, row-contiguous tensors into out (B, H, Tq, hd) in T and
// lse (B, H, Tq) fp32.
template <typename T>
void forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, bool causal, torch::Tensor& out,
             torch::Tensor& lse) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), hd = q.size(3), KV = k.size(1),
                rep = H / KV;
  const int64_t q_blocks = Tq / kBlock, k_blocks = Tk / kBlock;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  constexpr bool packs = std::is_same_v<T, bf16>;  // fp32 operands are read in place, bf16 ones packed
  at::parallel_for(0, B * KV, 1, [&](int64_t begin, int64_t end) {
    const int64_t block = hd * kBlock;
    const int64_t packed_keys = packs ? Tk * hd : 0;
    std::vector<T> kt(Tk * hd), kt_packed(packed_keys), v_packed(packed_keys);  // per block: K_j^T; packed K_j^T, V_j
    std::vector<Operand<T>> kt_op(k_blocks), v_op(k_blocks);
    std::vector<float> s(kBlock * kBlock), p(kBlock * kBlock), acc(kBlock * hd), m(kBlock), l(kBlock),
        done(kBlock * hd);
    std::vector<T> p_rounded(packs ? kBlock * kBlock : 0), out_rows(kBlock * hd);
    std::vector<T> v_rows(packs ? 0 : Tk * hd), q_rows(Tq * hd);  // strided heads' rows, made dense
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / KV, kv = item % KV;
      // fp32 V is read in place by every query block (its strided rows made dense), bf16 V packed once
      const HeadRows<T> kr = head_rows<T>(k, b, kv),
                        vr = packs ? head_rows<T>(v, b, kv) : dense_rows(head_rows<T>(v, b, kv), Tk, hd, v_rows);
      transpose_blocks(kr, k_blocks, hd, kt.data());
      key_block_operands(kt.data(), block, kBlock, hd, kBlock, kt_packed, kt_op);           // K_j^T (hd, kBlock)
      key_block_operands(vr.p, kBlock * vr.stride, vr.stride, kBlock, hd, v_packed, v_op);  // V_j (kBlock, hd)
      for (int64_t r = 0; r < rep; ++r) {
        const int64_t h = kv * rep + r;
        const HeadRows<T> qr = dense_rows(head_rows<T>(q, b, h), Tq, hd, q_rows);
        T* out_head = out.data_ptr<T>() + b * out.stride(0) + h * out.stride(1);
        float* lse_head = lse.data_ptr<float>() + b * lse.stride(0) + h * lse.stride(1);
        for (int64_t i = 0; i < q_blocks; ++i) {
          std::fill(m.begin(), m.end(), -std::numeric_limits<float>::infinity());
          std::fill(l.begin(), l.end(), 0.f);
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t j = 0; j < (causal ? i + 1 : k_blocks); ++j) {
            // S = Q_i K_j^T (kBlock, kBlock); acc += P V_j (kBlock, hd)
            gemm(kBlock, kBlock, hd, qr.row(i * kBlock), qr.stride, kt_op[j], s.data(), kBlock, false);
            softmax_step(s.data(), scale, causal, i * kBlock, j * kBlock, hd, m.data(), l.data(), acc.data(), p.data());
            gemm(kBlock, hd, kBlock, first_operand(p, p_rounded), kBlock, v_op[j], acc.data(), hd, true);
          }
          finish_rows(acc.data(), m.data(), l.data(), hd, done.data(), lse_head + i * kBlock);
          store_rows(done.data(), kBlock, hd, out_head + i * kBlock * out.stride(2), out.stride(2), out_rows);
        }
      }
    }
    blas::brgemm_release(/*is_vnni=*/packs);
  });
}

// CPU tensors of one dtype and batch, query and key lengths in whole blocks (equal where causal), a
// head size that is a multiple of 16 up to 256, and whole groups of query heads per kv head.
bool blocks_fit(const torch::Tensor& q, const torch::Tensor& k, bool causal) {
  return q.is_cpu() && k.is_cpu() && k.scalar_type() == q.scalar_type() && q.dim() == 4 && k.dim() == 4 &&
         q.size(0) == k.size(0) && (!causal || q.size(2) == k.size(2)) && q.size(2) > 0 && k.size(2) > 0 &&
         q.size(2) % kBlock == 0 && k.size(2) % kBlock == 0 && q.size(3) == k.size(3) && q.size(3) > 0 &&
         q.size(3) % 16 == 0 && q.size(3) <= 256 && k.size(1) > 0 && q.size(1) % k.size(1) == 0;
}

// x with its last dim contiguous (the kernels read rows through their stride).
torch::Tensor rows_contiguous(const torch::Tensor& x) {
  return x.stride(3) == 1 ? x : x.contiguous();
}

// fp32: AVX-512 or AVX2 lanes
bool fp32_ok() {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has_avx512() || avx2;
}

// bf16: a brgemm that packs bf16 (AMX) and AVX512-BF16's rounding
bool bf16_ok() {
  static const bool ok = blas::could_pack(at::kBFloat16) && __builtin_cpu_supports("avx512bf16");
  return ok && widest();
}

// The dtypes both kernels take on this CPU: bf16 through the fp32 kernels where it has no bf16 ones.
bool dtype_ok(const torch::Tensor& q) {
  return (q.scalar_type() == torch::kBFloat16 && (bf16_ok() || fp32_ok())) ||
         (q.scalar_type() == torch::kFloat32 && fp32_ok());
}

// bf16 that runs through the fp32 kernels (SDPA's bf16 backward without AMX: 8-14x its fp32 one).
bool through_fp32(const torch::Tensor& q) {
  return q.scalar_type() == torch::kBFloat16 && !bf16_ok();
}
torch::Tensor fp32(const torch::Tensor& x) {
  return x.to(torch::kFloat32);  // the layout kept
}

}  // namespace

bool flash_supported(const torch::Tensor& q, const torch::Tensor& k, bool causal) {
  return dtype_ok(q) && blocks_fit(q, k, causal);
}

std::pair<torch::Tensor, torch::Tensor> flash_forward(const torch::Tensor& q_in, const torch::Tensor& k_in,
                                                      const torch::Tensor& v_in, bool causal) {
  TORCH_CHECK(flash_supported(q_in, k_in, causal), "flash_forward: unsupported q ", q_in.sizes(), " ",
              q_in.scalar_type(), ", k ", k_in.sizes(), causal ? ", causal" : "");
  TORCH_CHECK(v_in.sizes() == k_in.sizes() && v_in.scalar_type() == q_in.scalar_type() && v_in.is_cpu(),
              "flash_forward: v ", v_in.sizes(), " ", v_in.scalar_type(), " on ", v_in.device(), " does not match k ",
              k_in.sizes(), " (", q_in.scalar_type(), " on the CPU)");
  if (through_fp32(q_in)) {
    auto [out, lse] = flash_forward(fp32(q_in), fp32(k_in), fp32(v_in), causal);
    return {out.to(torch::kBFloat16), lse};
  }
  const auto q = rows_contiguous(q_in), k = rows_contiguous(k_in), v = rows_contiguous(v_in);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), hd = q.size(3);
  auto out =
      torch::empty({B, Tq, H, hd}, q.options()).transpose(1, 2);  // (B, H, Tq, hd) over (B, Tq, H, hd), as SDPA's
  auto lse = torch::empty({B, H, Tq}, q.options().dtype(torch::kFloat32));
  if (q.scalar_type() == torch::kBFloat16)
    forward<bf16>(q, k, v, causal, out, lse);
  else
    forward<float>(q, k, v, causal, out, lse);
  return {out, lse};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward(
    const torch::Tensor& grad_out, const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
    const torch::Tensor& out_in, const torch::Tensor& lse_in, bool causal) {
  TORCH_CHECK(flash_supported(q_in, k_in, causal), "flash_backward: unsupported q ", q_in.sizes(), " ",
              q_in.scalar_type(), ", k ", k_in.sizes(), causal ? ", causal" : "");
  const auto dtype = q_in.scalar_type();
  TORCH_CHECK(v_in.sizes() == k_in.sizes() && v_in.scalar_type() == dtype && grad_out.sizes() == q_in.sizes() &&
                  grad_out.scalar_type() == dtype && out_in.sizes() == q_in.sizes() && out_in.scalar_type() == dtype &&
                  lse_in.sizes() == q_in.sizes().slice(0, 3) && v_in.is_cpu() && grad_out.is_cpu() && out_in.is_cpu() &&
                  lse_in.is_cpu(),
              "flash_backward: v ", v_in.sizes(), ", grad_out ", grad_out.sizes(), ", out ", out_in.sizes(), " (",
              dtype, ") and lse ", lse_in.sizes(), " (all on the CPU) do not match q ", q_in.sizes(), " and k ",
              k_in.sizes());
  if (through_fp32(q_in)) {
    const auto [dq, dk, dv] =
        flash_backward(fp32(grad_out), fp32(q_in), fp32(k_in), fp32(v_in), fp32(out_in), lse_in, causal);
    return {dq.to(torch::kBFloat16), dk.to(torch::kBFloat16), dv.to(torch::kBFloat16)};
  }
  const auto g = rows_contiguous(grad_out), q = rows_contiguous(q_in), k = rows_contiguous(k_in),
             v = rows_contiguous(v_in), o = rows_contiguous(out_in);
  const auto lse = lse_in.to(torch::kFloat32);
  // Each gradient in its input's layout (rows of hd contiguous either way): the model's transposed
  // (B, T, heads, hd) views come back as such, and their transposes need no copy.
  auto dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  if (dtype == torch::kBFloat16)
    backward<bf16>(g, q, k, v, o, lse, causal, dq, dk, dv);
  else
    backward<float>(g, q, k, v, o, lse, causal, dq, dk, dv);
  return {dq, dk, dv};
}

#else
bool flash_supported(const torch::Tensor&, const torch::Tensor&, bool) {
  return false;
}

std::pair<torch::Tensor, torch::Tensor> flash_forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                                      bool) {
  TORCH_CHECK(false, "flash_forward: built for x86-64 with libtorch's fbgemm only");
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward(const torch::Tensor&, const torch::Tensor&,
                                                                       const torch::Tensor&, const torch::Tensor&,
                                                                       const torch::Tensor&, const torch::Tensor&,
                                                                       bool) {
  TORCH_CHECK(false, "flash_backward: built for x86-64 with libtorch's fbgemm only");
}
#endif

std::pair<torch::Tensor, torch::Tensor> cpu_flash_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                          const torch::Tensor& v, bool causal) {
  // Ours gives each thread whole (batch, kv head)s: with fewer of them than threads, libtorch's
  // (batch, head, query block) items keep every thread busy (one head on 2 threads: ours 0.97x).
  if (flash_supported(q, k, causal) && q.size(0) * k.size(1) >= at::get_num_threads())
    return flash_forward(q, k, v, causal);
  auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, /*dropout_p=*/0.0, causal);
  return {out, lse};
}

}  // namespace titan
