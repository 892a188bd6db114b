// Context parallelism (TorchTitan's, as explicit collectives over the cp group): each rank holds
// T / cp positions of every sequence — with head-tail load balancing (the default) the sequence is
// cut into 2 cp chunks and rank i holds chunks i and 2 cp - 1 - i, so every rank has the same share
// of the causal triangle — and attention is exact over the whole sequence: ring attention, block
// by block (causal, full or skipped by the chunks' positions), merged by log-sum-exp, with its own
// backward. The keys and values come from one all-gather ("allgather") or around the ring, one
// all-to-all shift per step ("alltoall"); each rank's key and value gradients go home in one
// all-to-all.
#pragma once

#include <string>

#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

// The global positions of `rank`'s tokens in a sequence of `seq_len`, ascending within each chunk:
// chunks rank and 2 cp - 1 - rank of 2 cp (head-tail), or chunk rank of cp (contiguous).
torch::Tensor context_parallel_positions(int64_t seq_len, int64_t cp, int64_t rank, bool head_tail);

class ContextParallel : public ContextParallelHooks {
 public:
  // rotate_method: "allgather" or "alltoall" (parallelism.context_parallel_rotate_method). The
  // blocks run a CPU flash kernel on the CPU (flash_attention_cpu.h: ours where it is faster, else
  // libtorch's), else (or with formula_blocks) the formula.
  ContextParallel(ProcessGroup& group, int64_t seq_len, bool head_tail, std::string rotate_method,
                  bool formula_blocks = false);

  // This rank's positions of a batch: (B, T) -> (B, T / cp).
  torch::Tensor shard(const torch::Tensor& batch) const;

  torch::Tensor position_rows(const torch::Tensor& table) override;
  torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) override;

 private:
  ProcessGroup& group_;
  bool head_tail_;
  std::string rotate_method_;
  bool formula_blocks_;
  std::vector<torch::Tensor> positions_;  // every rank's, (T / cp,) int64
};

}  // namespace titan
