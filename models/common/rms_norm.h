// RMSNorm as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32, cast back to the input
// dtype. On the CPU (fp32, bf16, fp64, weight in x's dtype) one pass per row forward and one backward:
// libtorch's CPU forward is a composite of five ops, differentiated by autograd op by op. CUDA: libtorch's fused op.
#pragma once

#include "models/common/torch_api.h"

namespace titan {

// x: (..., D); weight: (D). Returns (..., D) in x's dtype.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

}  // namespace titan
