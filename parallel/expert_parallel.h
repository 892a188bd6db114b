// Expert parallelism (TorchTitan's ExpertParallel): each rank of the ep group holds num_experts / ep
// of every MoE layer's routed experts; a layer's token slots travel to their experts' rank and back.
// Dispatch: one all-to-all of the per-expert counts, then a variable all-to-all of the rows,
// regrouped from source-major to expert-major; combine undoes both. Both are autograd functions
// whose backward sends the gradients the other way.
#pragma once

#include <utility>
#include <vector>

#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

class ExpertParallel : public ExpertParallelHooks {
 public:
  // `token_shares` ranks (a tensor-parallel group whose ranks see the same sequence, when the experts
  // borrow its ranks) split each layer's tokens; this rank takes share `token_share`.
  ExpertParallel(ProcessGroup& ep, int64_t token_shares, int64_t token_share);
  std::pair<int64_t, int64_t> token_range(int64_t n_tokens) override;
  torch::Tensor run_experts(const torch::Tensor& rows, const std::vector<int64_t>& counts,
                            const LocalExperts& local) override;

 private:
  ProcessGroup& ep_;
  int64_t token_shares_, token_share_;
};

}  // namespace titan
