// Cross entropy over vocabulary-sharded logits without gathering them (loss parallel): each
// tensor-parallel rank holds the logits of its vocabulary slice; the max, the target logit and
// the sum of exponentials are all-reduced (fp32), and backward needs no communication:
// d logits = softmax - one-hot on the slice this rank holds.
#pragma once

#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

// logits (N, V/n): columns [vocab_start, vocab_start + V/n) of the full (N, V); labels (N) with
// ignore_index rows skipped -> the summed loss, a 0-dim fp32 tensor equal on every rank.
torch::Tensor vocab_parallel_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                               int64_t vocab_start, ProcessGroup& group, int64_t ignore_index = -100);

}  // namespace titan
