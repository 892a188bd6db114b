// Flash attention (causal, or a full block of context parallelism's ring) on x86-64 CPUs, forward and
// backward, in fp32 (with AVX-512 or AVX2) and bf16 (with AMX; through fp32 without). libtorch's CPU flash
// kernel runs its backward at 4.5-5.9x its forward in bf16 with AMX (it packs its blocks for AMX in the
// forward only), 11-30x without, and 2.1-2.9x in fp32 (bench/kernel_bench.sh attention_backward); these run every 128 x
// 128 block product through libtorch's brgemm (bf16 second operands packed for AMX: K^T and V once per kv head, P and
// dS per block; fp32 operands read in place).
#pragma once

#include <tuple>
#include <utility>

#include "models/common/torch_api.h"

namespace titan {

// The path our kernels take: the widest this CPU has (the softmax on AVX-512's 16 lanes; bf16 natively
// with AMX), or AVX2's as on CPUs without AVX-512 (8 lanes, bf16 through the fp32 kernels), so that the
// tests run that path on AVX-512 machines too; libtorch's brgemm and fbgemm's transposes still pick their
// own instructions by the CPU. Process-wide; kWidest unless set.
enum class FlashIsa { kWidest, kAvx2 };
void set_flash_isa(FlashIsa isa);
FlashIsa flash_isa();

// Whether flash_forward and flash_backward take these: fp32 on a CPU with AVX-512 or AVX2, bf16 on one
// whose brgemm packs bf16 (AMX) and that has AVX512-BF16 (under FlashIsa::kWidest), else through the fp32 kernels
// (converted in and out: SDPA's bf16 backward runs at 11-30x its forward there); one batch size, query and key lengths
// multiples of their 128-row blocks (equal where causal), a head size that is a multiple of 16 up to 256, and whole
// groups of query heads per kv head.
bool flash_supported(const torch::Tensor& q, const torch::Tensor& k, bool causal);

// q (B, H, Tq, hd); k, v (B, KV, Tk, hd), query head h reading kv head h / (H / KV); all bf16 or all
// fp32. Returns out (B, H, Tq, hd) in their dtype, laid out as (B, Tq, H, hd) like SDPA's, and lse
// (B, H, Tq) fp32, the log-sum-exp of each query's scaled scores (what flash_backward takes); bf16
// rounds P once for its product with V, as SDPA's does (not where it runs through fp32).
std::pair<torch::Tensor, torch::Tensor> flash_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                      const torch::Tensor& v, bool causal);

// The CPU flash forward as flash_forward returns it: ours where flash_supported and there are
// as many (batch, kv head)s as threads, else libtorch's (any float dtype; the same layout and log-sum-exp).
std::pair<torch::Tensor, torch::Tensor> cpu_flash_forward(const torch::Tensor& q, const torch::Tensor& k,
                                                          const torch::Tensor& v, bool causal);

// grad_out, q, out (B, H, Tq, hd); k, v (B, KV, Tk, hd), query head h reading kv head h / (H / KV);
// all bf16 or all fp32; lse (B, H, Tq) fp32, the forward's log-sum-exp of each query's scaled scores
// (scale 1 / sqrt(hd)); causal: query t sees keys 0..t, else every key (a block of context
// parallelism's ring). Returns dq (B, H, Tq, hd), dk, dv (B, KV, Tk, hd), each laid out as q, k, v are
// where those are dense (the model's transposed views: no copy after), contiguous otherwise;
// accumulated in fp32 (bf16 ones rounded once).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward(const torch::Tensor& grad_out,
                                                                       const torch::Tensor& q, const torch::Tensor& k,
                                                                       const torch::Tensor& v, const torch::Tensor& out,
                                                                       const torch::Tensor& lse, bool causal);

}  // namespace titan
