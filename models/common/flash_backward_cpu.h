// The backward of flash attention (causal, or a full block of context parallelism's ring) in bf16 on
// CPUs with AMX. libtorch's CPU flash kernel packs its bf16 blocks for AMX in the forward but not in
// the backward, which runs 4.5-5.8x its forward (bench/kernel_bench.sh attention_backward); this one
// runs every block product through libtorch's brgemm (bf16 x bf16 -> fp32, the second operand packed
// once per block), as that forward does.
#pragma once

#include <torch/torch.h>

#include <tuple>

namespace titan {

// Whether flash_backward_bf16 takes these: bf16 on the CPU, query and key lengths multiples of its
// 128-row blocks (equal where causal), a head size that is a multiple of 16, and an x86-64 CPU whose
// brgemm packs bf16 (AMX) and that has AVX512-BF16.
bool flash_backward_bf16_supported(const torch::Tensor& q, const torch::Tensor& k, bool causal);

// grad_out, q, out (B, H, Tq, hd); k, v (B, KV, Tk, hd), query head h reading kv head h / (H / KV);
// lse (B, H, Tq) fp32, the forward's log-sum-exp of each query's scaled scores (scale 1 / sqrt(hd));
// causal: query t sees keys 0..t, else every key (a block of context parallelism's ring).
// Returns dq (B, H, Tq, hd), dk, dv (B, KV, Tk, hd), accumulated in fp32 and rounded once.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> flash_backward_bf16(
    const torch::Tensor& grad_out, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& out, const torch::Tensor& lse, bool causal);

}  // namespace titan
