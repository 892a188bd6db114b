// RMSNorm as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32, cast back to the input
// dtype. On the CPU the backward is one pass per row (libtorch has a fused backward on CUDA only;
// on the CPU autograd differentiates its composite forward op by op); the forward is libtorch's.
#pragma once

#include <torch/torch.h>

namespace titan {

// x: (..., D); weight: (D). Returns (..., D) in x's dtype.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace titan
