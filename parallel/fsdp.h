// FSDP over plain libtorch modules, as FSDP2 does it: every parameter is sharded on one dim (0,
// or dim 1 as a shard_placement_fn may say) across its shard group (torch.chunk's uneven split);
// a unit's parameters on different groups (the routed experts' efsdp) gather apart. The model's
// registered parameters are this rank's shards (what the optimizer and the checkpoint see), while
// the weights forward reads are all-gathered per unit of the model's plan
// (models/<model>/parallelize.*) just before the unit runs, freed after it (reshard_after_forward),
// gathered again just before its backward, and their gradients reduce-scattered (then summed
// across the replicate group: HSDP) as soon as the unit's backward ends. Under pipeline
// parallelism (`pipelined`) several microbatches are in flight: a unit is gathered once and kept
// until the step ends, and its gradients are summed unsharded and reduce-scattered once, in
// reduce_gradients() after the stage's last backward (TorchTitan's reshard_after_forward=False
// under PP and its REDUCE_GRAD).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

struct FsdpOptions {
  bool reshard_after_forward = true;                  // parallelism.fsdp_reshard_after_forward, resolved
  torch::ScalarType param_dtype = torch::kFloat32;    // training.mixed_precision_param: gathered copies
  torch::ScalarType reduce_dtype = torch::kFloat32;   // training.mixed_precision_reduce: gradient sums
  bool pipelined = false;                             // several forwards before their backwards (PP)
};

// How FSDP shards one parameter: its `unsharded` shape (once TP or EP cut it) is split on `dim`
// over `shard`, and its gradients are then summed over `replicate` (HSDP; size 1 for plain FSDP).
struct FsdpSharding {
  std::vector<int64_t> unsharded;
  int64_t dim = 0;
  ProcessGroup* shard = nullptr;
  ProcessGroup* replicate = nullptr;
};

struct FsdpUnit;  // the parameters of one unit on one group, gathered copies and collectives (fsdp.cpp)

class FullyShardedModel : public ForwardHooks {
 public:
  // Gathers `model`'s parameters by its `plan` and installs itself as its hooks. Each parameter
  // already holds this rank's piece of its sharding (by FQN): torch.chunk of its dim over the
  // shard group. Every parameter of the model needs a sharding.
  FullyShardedModel(std::shared_ptr<torch::nn::Module> model, const ParallelPlan& plan,
                    const std::map<std::string, FsdpSharding>& shardings, FsdpOptions options);
  ~FullyShardedModel() override;

  // Gathered full copies of every parameter in its master dtype (Hugging Face exports).
  std::vector<std::pair<std::string, torch::Tensor>> full_parameters();

  void pre_forward(int64_t unit) override;
  torch::Tensor post_forward(int64_t unit, torch::Tensor out) override;
  // First in a unit's backward: regathers it if resharded, starts the previous unit's all-gather.
  void before_backward(int64_t unit);
  // Pipelined: reduce-scatters the gradients summed since the last call into the shards' .grad
  // and frees the gathered weights. A collective over the shard (and replica) group.
  void reduce_gradients();

 private:
  std::shared_ptr<torch::nn::Module> model_;
  ForwardHooks** hooks_;  // the model's, pointing at this
  // Indexed by ForwardHooks' unit number: the unit's parameters, one FsdpUnit per shard group.
  std::vector<std::vector<std::unique_ptr<FsdpUnit>>> units_;
};

}  // namespace titan
