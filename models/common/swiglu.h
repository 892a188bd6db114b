// SwiGLU's gate silu(a) * b, where a = w1 x and b = w3 x (Llama's FFN and MoE experts). fp32 and bf16
// on the CPU: one pass forward and one backward, computed in fp32 and rounded once, keeping only a and b
// (autograd of silu then mul keeps silu(a) too and passes over the data five times). CUDA: the same as
// one kernel each way (models/common/swiglu_cuda.cu). Else libtorch's ops.
#pragma once

#include "models/common/torch_api.h"

namespace titan {

// a, b: (..., hidden), the same dtype and shape. Returns (..., hidden) in that dtype.
torch::Tensor swiglu(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace titan
