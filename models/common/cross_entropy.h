// The summed token cross-entropy of logits against labels, as torch's cross_entropy(logits.float(),
// labels, reduction="sum", ignore_index). fp32 and bf16 logits on the CPU: one pass per row each way
// in fp32, reading the logits in their own dtype and keeping one log-sum-exp per row (no fp32 copy,
// no log-softmax tensor, no dense gradient of the loss); elsewhere torch's.
#pragma once

#include <torch/torch.h>

namespace titan {

// logits: (N, V); labels: (N) int64, each in [0, V) or ignore_index. Returns a fp32 scalar.
torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index = -100);

}  // namespace titan
