// Tensor parallelism with sequence parallel (TorchTitan's apply_tp, as explicit collectives over
// the tp group): the residual stream between blocks is split on the sequence, all-gathered before
// attention and the FFN (whose colwise projections hold this rank's heads / hidden rows) and
// reduce-scattered after wo and w2 (rowwise: their partial sums). The embedding holds this rank's
// vocabulary rows: a masked lookup, then a reduce-scatter; the output projection gives this
// rank's vocabulary columns of the logits, gathered only when loss parallel is off.
#pragma once

#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

class TensorParallel : public TensorParallelHooks {
 public:
  TensorParallel(ProcessGroup& group, bool loss_parallel) : group_(group), loss_parallel_(loss_parallel) {}

  torch::Tensor embed(const torch::Tensor& tokens, const torch::Tensor& weight) override;
  torch::Tensor sublayer_input(const torch::Tensor& x) override;
  torch::Tensor sublayer_output(const torch::Tensor& x) override;
  torch::Tensor project(const torch::Tensor& h, const torch::Tensor& weight) override;
  // Loss parallel: each rank's vocabulary columns, reduced over the group; else of the gathered logits.
  torch::Tensor loss_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels) override;

 private:
  ProcessGroup& group_;
  bool loss_parallel_;
};

}  // namespace titan
