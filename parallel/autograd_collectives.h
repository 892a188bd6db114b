// The collectives tensor and expert parallelism put inside the model, each an autograd
// function with its conjugate as the backward (Megatron's mappings): what forward gathers,
// backward reduce-scatters, and the reverse. They are pure functions of their inputs, so activation checkpointing may run
// them again in its recompute. Activations are (B, T, ...) with the sequence on dim 1.
#pragma once

#include <vector>

#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

// Sequence parallel: (B, T/n, ...) -> (B, T, ...) by all-gather; backward reduce-scatters.
torch::Tensor gather_sequence(const torch::Tensor& x, ProcessGroup& group);
// (B, T, ...) partial sums -> (B, T/n, ...) by reduce-scatter; backward all-gathers.
torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, ProcessGroup& group);
// Vocabulary-sharded logits (..., V/n) -> (..., V) by all-gather; backward keeps this rank's slice.
torch::Tensor gather_last_dim(const torch::Tensor& x, ProcessGroup& group);
// Rows (M, ...) sent to the ranks in blocks of send_rows[r], received in blocks of recv_rows[r]
// (expert parallel's token dispatch and combine); backward sends the gradients back the same way.
torch::Tensor all_to_all_rows(const torch::Tensor& x, const std::vector<int64_t>& send_rows,
                              const std::vector<int64_t>& recv_rows, ProcessGroup& group);

}  // namespace titan
