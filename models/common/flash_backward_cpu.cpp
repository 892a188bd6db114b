#include "models/common/flash_backward_cpu.h"

// fbgemm's transpose and AVX512-BF16's rounding: x86-64 with a libtorch that ships fbgemm only
// (elsewhere SDPA's backward runs).
#if defined(__x86_64__) && defined(__GNUC__) && __has_include(<fbgemm/Utils.h>)
#define TITAN_FLASH_BACKWARD_CPU
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <fbgemm/Utils.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "models/common/cpu_kernel.h"
#endif

namespace titan {
#ifdef TITAN_FLASH_BACKWARD_CPU
namespace {

namespace blas = at::native::cpublas;
using bf16 = at::BFloat16;
constexpr int64_t kBlock = 128;  // query and key rows of one block product

// One head's (T, hd) rows in a (B, heads, T, hd) tensor whose last dim is contiguous.
struct HeadRows {
  const bf16* p;
  int64_t stride;
  const bf16* row(int64_t t) const { return p + t * stride; }
};
HeadRows head_rows(const torch::Tensor& x, int64_t b, int64_t h) {
  return {x.data_ptr<bf16>() + b * x.stride(0) + h * x.stride(1), x.stride(2)};
}

// oneDNN packs brgemm's second operand in column blocks of at most 64 (leading dimension 16, 32, 48 or 64).
constexpr int64_t kPackN = 64;

// brgemm's second operand: (K, N) rows `ld` apart, packed into `out` (K x N) block by block of columns.
void pack(const bf16* src, int64_t ld, int64_t K, int64_t N, bf16* out) {
  for (int64_t n0 = 0; n0 < N; n0 += kPackN) {
    const int64_t w = std::min(kPackN, N - n0);
    blas::pack(K, w, ld, w, at::kBFloat16, at::kBFloat16, src + n0, out + n0 * K);
  }
}

// c (M, N), rows ld_c apart, = (or += with `add`) a (M, K), rows ld_a apart, times b packed by pack().
void gemm(int64_t M, int64_t N, int64_t K, const bf16* a, int64_t ld_a, const bf16* b, float* c, int64_t ld_c,
          bool add) {
  for (int64_t n0 = 0; n0 < N; n0 += kPackN) {
    const int64_t w = std::min(kPackN, N - n0);
    blas::brgemm(M, w, K, ld_a, w, ld_c, add, a, b + n0 * K, c + n0);
  }
}

// n rows of hd, rows `ld` apart, transposed into t (hd, n): fbgemm's SIMD transpose, as libtorch's
// own CPU kernels use it (a scalar loop took half the time outside the block products).
void transpose(const bf16* src, int64_t ld, int64_t n, int64_t hd, bf16* t) {
  fbgemm::transpose_simd<uint16_t>(n, hd, reinterpret_cast<const uint16_t*>(src), ld, reinterpret_cast<uint16_t*>(t),
                                   n);
}

// x (n floats, n a multiple of 32) rounded to bf16, to nearest even, by AVX512-BF16's conversion
// (every CPU with AMX has it): a third of the element-wise work below when written as cpu::store.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void round_bf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 32)
    _mm512_storeu_si512(out + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
}

// One block pair's P = exp(S scale - lse), 0 for keys after the query where causal, and
// dS = P (dP - D) scale, both rounded to bf16 (kBlock, kBlock) row-major. s, dp (kBlock, kBlock)
// fp32; lse, d: the block's queries'; q0, k0: the first query's and key's positions.
TITAN_CPU_CLONES void probs_and_grads(const float* s, const float* dp, const float* lse, const float* d, float scale,
                                      bool causal, int64_t q0, int64_t k0, uint16_t* p, uint16_t* ds) {
  alignas(64) float p_row[kBlock], ds_row[kBlock];
  for (int a = 0; a < kBlock; ++a) {
    const int visible =
        causal ? static_cast<int>(std::clamp<int64_t>(q0 + a - k0 + 1, 0, kBlock)) : kBlock;  // keys k0 .. q0 + a
    const float l = lse[a], da = d[a];
    const float* sa = s + a * kBlock;
    const float* dpa = dp + a * kBlock;
    for (int c = 0; c < visible; ++c) {
      p_row[c] = cpu::exp_f32(sa[c] * scale - l);
      ds_row[c] = p_row[c] * (dpa[c] - da) * scale;
    }
    std::fill(p_row + visible, p_row + kBlock, 0.f);  // keys after the query: P = dS = 0
    std::fill(ds_row + visible, ds_row + kBlock, 0.f);
    round_bf16(p_row, kBlock, p + a * kBlock);
    round_bf16(ds_row, kBlock, ds + a * kBlock);
  }
}

// D = rowsum(dO * O) of a head's `rows` rows, in fp32.
TITAN_CPU_CLONES void row_dots(HeadRows g, HeadRows o, int64_t rows, int64_t hd, float* d) {
  for (int64_t t = 0; t < rows; ++t) {
    const auto* gt = reinterpret_cast<const uint16_t*>(g.row(t));
    const auto* ot = reinterpret_cast<const uint16_t*>(o.row(t));
    d[t] = cpu::sum16<float>(hd, [&](int64_t c) { return cpu::load(gt[c]) * cpu::load(ot[c]); });
  }
}

// (hd, rows) fp32 transposed and rounded into bf16 (rows, hd), through `scratch` (rows, hd).
void store_transposed(const float* acc_t, int64_t rows, int64_t hd, float* scratch, uint16_t* out) {
  fbgemm::transpose_simd<float>(hd, rows, acc_t, rows, scratch, hd);
  round_bf16(scratch, rows * hd, out);
}

}  // namespace

bool flash_backward_bf16_supported(const torch::Tensor& q, const torch::Tensor& k, bool causal) {
  static const bool amx = blas::could_pack(at::kBFloat16) && __builtin_cpu_supports("avx512bf16");
  return amx && q.is_cpu() && q.scalar_type() == torch::kBFloat16 && k.scalar_type() == torch::kBFloat16 &&
         q.dim() == 4 && k.dim() == 4 && (!causal || q.size(2) == k.size(2)) && q.size(2) % kBlock == 0 &&
         k.size(2) % kBlock == 0 && q.size(3) == k.size(3) && q.size(3) % 16 == 0 && q.size(3) <= 256 &&
         k.size(1) > 0 && q.size(1) % k.size(1) == 0;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward_bf16(
    const torch::Tensor& grad_out, const torch::Tensor& q_in, const torch::Tensor& k_in, const torch::Tensor& v_in,
    const torch::Tensor& out_in, const torch::Tensor& lse_in, bool causal) {
  TORCH_CHECK(flash_backward_bf16_supported(q_in, k_in, causal), "flash_backward_bf16: unsupported q ", q_in.sizes(),
              " ", q_in.scalar_type(), ", k ", k_in.sizes(), causal ? ", causal" : "");
  TORCH_CHECK(v_in.sizes() == k_in.sizes() && v_in.scalar_type() == torch::kBFloat16 &&
                  grad_out.sizes() == q_in.sizes() && grad_out.scalar_type() == torch::kBFloat16 &&
                  out_in.sizes() == q_in.sizes() && out_in.scalar_type() == torch::kBFloat16 &&
                  lse_in.sizes() == q_in.sizes().slice(0, 3),
              "flash_backward_bf16: v ", v_in.sizes(), ", grad_out ", grad_out.sizes(), ", out ", out_in.sizes(),
              " (bf16) and lse ", lse_in.sizes(), " do not match q ", q_in.sizes(), " and k ", k_in.sizes());
  auto rows_contiguous = [](const torch::Tensor& x) { return x.stride(3) == 1 ? x : x.contiguous(); };
  const auto g = rows_contiguous(grad_out), q = rows_contiguous(q_in), k = rows_contiguous(k_in),
             v = rows_contiguous(v_in), o = rows_contiguous(out_in);
  const auto lse = lse_in.to(torch::kFloat32);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), hd = q.size(3), KV = k.size(1),
                rep = H / KV;
  const int64_t q_blocks = Tq / kBlock, k_blocks = Tk / kBlock;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  auto dq = torch::empty({B, H, Tq, hd}, q.options()), dk = torch::empty({B, KV, Tk, hd}, k.options()),
       dv = torch::empty({B, KV, Tk, hd}, v.options());
  at::parallel_for(0, B * KV, 1, [&](int64_t begin, int64_t end) {
    const int64_t block_bf16 = hd * kBlock;  // one (kBlock, hd) block, or its transpose
    std::vector<bf16> kt_packed(Tk * hd), vt_packed(Tk * hd), k_packed(Tk * hd);  // per key block
    std::vector<bf16> qt(Tq * hd), got(Tq * hd), tmp(block_bf16);                 // per query block
    std::vector<bf16> p(kBlock * kBlock), ds(kBlock * kBlock), p_packed(kBlock * kBlock), ds_packed(kBlock * kBlock);
    std::vector<float> s(kBlock * kBlock), dp(kBlock * kBlock), lse_rows(Tq), d_rows(Tq);
    std::vector<float> dq_acc(Tq * hd), dkt_acc(hd * Tk), dvt_acc(hd * Tk);  // dq (Tq, hd); dk, dv transposed (hd, Tk)
    std::vector<float> scratch(Tk * hd);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / KV, kv = item % KV;
      const HeadRows kr = head_rows(k, b, kv), vr = head_rows(v, b, kv);
      for (int64_t j = 0; j < k_blocks; ++j) {
        transpose(kr.row(j * kBlock), kr.stride, kBlock, hd, tmp.data());
        pack(tmp.data(), kBlock, hd, kBlock, &kt_packed[j * block_bf16]);  // K_j^T (hd, kBlock)
        transpose(vr.row(j * kBlock), vr.stride, kBlock, hd, tmp.data());
        pack(tmp.data(), kBlock, hd, kBlock, &vt_packed[j * block_bf16]);            // V_j^T (hd, kBlock)
        pack(kr.row(j * kBlock), kr.stride, kBlock, hd, &k_packed[j * block_bf16]);  // K_j (kBlock, hd)
      }
      std::fill(dkt_acc.begin(), dkt_acc.end(), 0.f);
      std::fill(dvt_acc.begin(), dvt_acc.end(), 0.f);
      for (int64_t r = 0; r < rep; ++r) {
        const int64_t h = kv * rep + r;
        const HeadRows qr = head_rows(q, b, h), gr = head_rows(g, b, h), orows = head_rows(o, b, h);
        const float* lse_head = lse.data_ptr<float>() + b * lse.stride(0) + h * lse.stride(1);
        for (int64_t t = 0; t < Tq; ++t) lse_rows[t] = lse_head[t * lse.stride(2)];
        row_dots(gr, orows, Tq, hd, d_rows.data());
        for (int64_t i = 0; i < q_blocks; ++i) {
          transpose(qr.row(i * kBlock), qr.stride, kBlock, hd, &qt[i * block_bf16]);   // Q_i^T (hd, kBlock)
          transpose(gr.row(i * kBlock), gr.stride, kBlock, hd, &got[i * block_bf16]);  // dO_i^T (hd, kBlock)
        }
        std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
        for (int64_t i = 0; i < q_blocks; ++i)
          for (int64_t j = 0; j < (causal ? i + 1 : k_blocks); ++j) {
            // S = Q_i K_j^T, dP = dO_i V_j^T: (kBlock, kBlock)
            gemm(kBlock, kBlock, hd, qr.row(i * kBlock), qr.stride, &kt_packed[j * block_bf16], s.data(), kBlock,
                 false);
            gemm(kBlock, kBlock, hd, gr.row(i * kBlock), gr.stride, &vt_packed[j * block_bf16], dp.data(), kBlock,
                 false);
            probs_and_grads(s.data(), dp.data(), &lse_rows[i * kBlock], &d_rows[i * kBlock], scale, causal, i * kBlock,
                            j * kBlock, reinterpret_cast<uint16_t*>(p.data()), reinterpret_cast<uint16_t*>(ds.data()));
            pack(p.data(), kBlock, kBlock, kBlock, p_packed.data());
            pack(ds.data(), kBlock, kBlock, kBlock, ds_packed.data());
            // dV^T_j += dO_i^T P, dK^T_j += Q_i^T dS: (hd, kBlock) columns of (hd, Tk); dQ_i += dS K_j
            gemm(hd, kBlock, kBlock, &got[i * block_bf16], kBlock, p_packed.data(), &dvt_acc[j * kBlock], Tk, true);
            gemm(hd, kBlock, kBlock, &qt[i * block_bf16], kBlock, ds_packed.data(), &dkt_acc[j * kBlock], Tk, true);
            gemm(kBlock, hd, kBlock, ds.data(), kBlock, &k_packed[j * block_bf16], &dq_acc[i * kBlock * hd], hd, true);
          }
        round_bf16(dq_acc.data(), Tq * hd, cpu::mutable_ptr<uint16_t>(dq, b * dq.stride(0) + h * dq.stride(1)));
      }
      store_transposed(dkt_acc.data(), Tk, hd, scratch.data(),
                       cpu::mutable_ptr<uint16_t>(dk, b * dk.stride(0) + kv * dk.stride(1)));
      store_transposed(dvt_acc.data(), Tk, hd, scratch.data(),
                       cpu::mutable_ptr<uint16_t>(dv, b * dv.stride(0) + kv * dv.stride(1)));
    }
    blas::brgemm_release();
  });
  return {dq, dk, dv};
}

#else
bool flash_backward_bf16_supported(const torch::Tensor&, const torch::Tensor&, bool) {
  return false;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward_bf16(const torch::Tensor&, const torch::Tensor&,
                                                                            const torch::Tensor&, const torch::Tensor&,
                                                                            const torch::Tensor&, const torch::Tensor&,
                                                                            bool) {
  TORCH_CHECK(false, "flash_backward_bf16: x86-64 CPUs with AMX only");
}
#endif
}  // namespace titan
