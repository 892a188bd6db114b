// Causal softmax attention with grouped query heads, computed by query blocks: block b attends to
// the keys up to its own end only, so the masked part beyond the diagonal blocks is neither
// computed nor kept for backward (10/16 of the T x T work with 4 blocks, 36/64 with 8). The result is
// softmax(q k / sqrt(hd) + causal mask) v; each query row's softmax just skips keys it masks.
#pragma once

#include <torch/torch.h>

namespace titan {

// Query blocks for a sequence of T tokens: blocks of 128 queries, at least 4, from T = 128 on,
// else 1 (the full matrix); the fastest of 2/4/8 on the debug and mid models (bench/kernel_bench.sh).
int64_t attention_query_blocks(int64_t T);

// q (B, KV, rep, T, hd): the rep query heads of each kv head; k (B, KV, hd, T); v (B, KV, T, hd)
// -> (B, KV, rep, T, hd). Matmuls go through batched_matmul (bf16 accumulates in fp32).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace titan
