// The summed token cross-entropy of logits against labels, as torch's cross_entropy(logits.float(),
// labels, reduction="sum", ignore_index). fp32 and bf16 logits on the CPU: one pass per row each way
// in fp32, reading the logits in their own dtype and keeping one log-sum-exp per row (no fp32 copy,
// no log-softmax tensor, no dense gradient of the loss); elsewhere torch's. Fused with the output
// projection, linear_cross_entropy_sum never holds more than one chunk of the logits, whose rows are
// our kernels' on the CPU and on CUDA (models/common/cross_entropy_cuda.cu).
#pragma once

#include "models/common/torch_api.h"

namespace titan {

// logits: (N, V); labels: (N) int64, each in [0, V) or ignore_index. Returns a fp32 scalar.
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index = -100);

// cross_entropy_sum(h @ weight^T, labels), the projection run `chunk_rows` rows at a time (0: as
// many as make a chunk's logits 2^24 elements on the CPU, 2^28 on a GPU, and D at least). With gradients
// wanted, the forward computes them too and keeps dh (N, D) and dweight (V, D) instead of logits.
// h: (N, D); weight: (V, D); labels: (N). Returns a fp32 scalar.
torch::Tensor linear_cross_entropy_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels,
                                       int64_t ignore_index = -100, int64_t chunk_rows = 0);

}  // namespace titan
