// Rotary position embedding on interleaved pairs (x[2i], x[2i+1]), as TorchTitan and Meta's
// reference; Hugging Face's rotate_half layout differs by a per-head row permutation of wq/wk.
#pragma once

#include "models/common/torch_api.h"
#include "models/llama3/model_args.h"

namespace titan::llama3 {

// Inverse frequencies (head_dim/2,), fp32, with Llama 3.1 scaling when `scaling` is set.
torch::Tensor rope_inv_freq(int64_t head_dim, double theta, const std::optional<RopeScaling>& scaling);

// cos and sin of position * inv_freq: two (max_seq_len, head_dim/2) fp32 tables.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const ModelArgs& args);

// x: (B, T, n_heads, head_dim); cos, sin: (>=T, head_dim/2). Rotation in fp32, result in x's dtype.
// On the CPU and CUDA one pass forward and one backward (the inverse rotation, keeping only cos
// and sin).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// The same as ATen ops: other devices' path, and the form the one-pass kernels replaced (bench/kernel_bench).
torch::Tensor apply_rope_composite(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace titan::llama3
