// Causal softmax attention with grouped query heads, by libtorch's scaled_dot_product_attention:
// flash attention on the CPU (any float dtype) and for bf16/fp16 on CUDA (keys past each query
// block are skipped, bf16 accumulates in fp32, backward keeps only the log-sum-exp); fp32 on CUDA
// takes its memory-efficient kernel. It replaced our query-block kernel, which it beat in fp32 and
// in bf16 accuracy (bench/kernel_bench.sh, README). On x86-64 CPUs the flash kernels are ours where
// they beat it (flash_attention_cpu.h): the backward in bf16 with AMX (3.3-6.8x its own), through fp32
// without (14-19x), in fp32 with AVX-512 or AVX2 (1.5-1.9x); the forward 1.2-1.7x (fp32, bf16 either way).
#pragma once

#include "models/common/torch_api.h"

namespace titan {

// q (B, H, T, hd); k, v (B, KV, T, hd) with H a multiple of KV: query head h reads kv head
// h / (H / KV), as repeat_interleave would give -> (B, H, T, hd).
torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

}  // namespace titan
