// The model as the trainer sees it once its plan is applied on the mesh: this rank's parts of it
// (one, or its pipeline stages' under pipeline parallelism), with tensor parallel (with sequence
// and loss parallel) when tp > 1, context parallel attention when cp > 1, expert parallel when
// ep > 1, then FSDP (and HSDP) when dp_shard > 1, cp > 1 or the routed experts' efsdp > 1, or DDP
// when only dp_replicate > 1. The trainer zeroes gradients, syncs them, clips them, computes the loss and
// checkpoints through this one interface, whatever the layout; every parameter has a Placement,
// from which its checkpoint chunk, its saving rank and its share of the gradient norm follow.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "parallel/collectives.h"
#include "parallel/context_parallel.h"
#include "parallel/ddp.h"
#include "parallel/expert_parallel.h"
#include "parallel/fsdp.h"
#include "parallel/parallel_dims.h"
#include "parallel/placement.h"
#include "parallel/tensor_parallel.h"

namespace titan {

struct ParallelOptions {
  FsdpOptions fsdp;
  bool loss_parallel = true;  // with tp > 1: vocabulary-parallel cross entropy (not parallelism.disable_loss_parallel)
  torch::TensorOptions param_options;  // the device and dtype this rank's pieces are made on
  int64_t seq_len = 0;                  // with cp > 1: training.seq_len
  bool cp_head_tail = true;             // parallelism.context_parallel_load_balancer headtail (else contiguous)
  std::string cp_rotate_method = "allgather";
};

// Fills `full` (the parameter's whole shape, fp32 on the CPU) with the parameter's initial values.
using ParameterInit = std::function<void(const std::string& fqn, torch::Tensor& full)>;

// A module with the plan that says how to parallelize it (models/<model>/parallelize.*).
struct ModelPart {
  std::shared_ptr<torch::nn::Module> module;
  ParallelPlan plan;
};

class ParallelizedModel {
 public:
  // The parts' parameters have their shapes but no storage yet (the meta device): each rank makes
  // only its pieces, initialising one whole parameter at a time with `init` and keeping its piece,
  // so every layout starts from the same values and no rank ever holds the whole model. `comm` is
  // null for one rank. Throws std::invalid_argument for a layout the plan cannot take (DDP with TP).
  ParallelizedModel(std::vector<ModelPart> parts, const ParallelDims& dims, int64_t rank, Collectives* comm,
                    ParallelOptions options, const ParameterInit& init);
  ~ParallelizedModel();

  // The parameters the optimizer updates: this rank's pieces, by FQN.
  std::vector<std::pair<std::string, torch::Tensor>> parameters() const;
  const Placement& placement(const std::string& fqn) const;
  Placement::Piece piece(const std::string& fqn) const;  // this rank's
  bool owns(const std::string& fqn) const;              // this rank saves the piece and counts it in norms
  bool owns_first_piece(const std::string& fqn) const;  // and the piece at offset 0: saves per-tensor state once
  bool fully_sharded() const { return !fsdp_.empty(); }  // FSDP: matmuls run in its param dtype

  // This rank's positions of a batch (B, T): all of them, or (B, T / cp) under context parallel.
  torch::Tensor shard_sequence(const torch::Tensor& batch) const;
  // Before a step's first microbatch: no gradient is left from the last step.
  void zero_grad();
  // Whether the next backward syncs gradients (only the last microbatch's does: DDP's no_sync).
  void set_gradient_sync(bool sync);
  // After the last backward: every local gradient holds its sum over the data-parallel ranks, and
  // the gradients of tensor-parallel-replicated weights their sum over the tp ranks.
  void finish_gradient_sync();
  // The global gradient norm, each piece counted once; a collective (every rank calls it).
  double grad_norm();
  // Whole parameters in their master dtype, for a Hugging Face export; a collective (every rank
  // calls it), rank 0 holds the result, every pipeline stage's.
  std::vector<std::pair<std::string, torch::Tensor>> full_parameters();

 private:
  void gather_stages_to_rank0(std::vector<std::pair<std::string, torch::Tensor>>& out);

  std::vector<ModelPart> parts_;
  ParallelDims dims_;
  int64_t rank_;
  Collectives* comm_;
  std::map<std::string, Placement> placements_;
  std::map<std::string, TpLayout> tp_layouts_;
  std::unique_ptr<TensorParallel> tp_;
  std::vector<TensorParallelHooks**> tp_hooks_;
  std::unique_ptr<ContextParallel> cp_;
  std::vector<ContextParallelHooks**> cp_hooks_;
  std::unique_ptr<ExpertParallel> ep_;
  std::vector<ExpertParallelHooks**> ep_hooks_;
  std::set<std::string> ep_sharded_;                      // routed experts cut over ep, then sharded by FSDP over efsdp
  std::vector<std::unique_ptr<FullyShardedModel>> fsdp_;  // one per part
  std::unique_ptr<DistributedDataParallel> ddp_;
  int64_t gathers_ = 0;  // full_parameters calls: their store keys differ
};

}  // namespace titan
