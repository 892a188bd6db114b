// Causal softmax attention with grouped query heads, by libtorch's scaled_dot_product_attention:
// flash attention on the CPU (any float dtype) and for bf16/fp16 on CUDA (keys past each query
// block are skipped, bf16 accumulates in fp32, backward keeps only the log-sum-exp); fp32 on CUDA
// takes its memory-efficient kernel. It replaced our query-block kernel, which it beat in fp32 and
// in bf16 accuracy (bench/kernel_bench.sh, README). On x86-64 CPUs with AMX (bf16) or AVX-512 (fp32)
// its forward is kept and the backward is ours (flash_attention_cpu.h): 1.6-1.9x faster than its own
// in fp32, 2.5-5.9x in bf16.
#pragma once

#include <torch/torch.h>

namespace titan {

// q (B, H, T, hd); k, v (B, KV, T, hd) with H a multiple of KV: query head h reads kv head
// h / (H / KV), as repeat_interleave would give -> (B, H, T, hd).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace titan
