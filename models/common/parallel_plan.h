// How a model is to be parallelized, said by the model's own plan (models/<model>/parallelize.*)
// in terms of its parameter names and module members, with no ranks: parallel/ applies it, as
// TorchTitan keeps parallelize.py apart from model.py.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/common/layers.h"
#include "models/common/torch_api.h"

namespace titan {

// Called by the model around each FSDP unit of its forward pass, in forward order (the units of
// ParallelPlan). FSDP gathers a unit's parameters in pre_forward and may wrap its output.
struct ForwardHooks {
  virtual ~ForwardHooks() = default;
  virtual void pre_forward(int64_t unit) = 0;
  virtual torch::Tensor post_forward(int64_t unit, torch::Tensor out) = 0;
};

// Called by the model where tensor parallelism changes what flows between its layers; without
// tensor parallelism the model does the plain thing itself. T' is T / tp with sequence parallel.
struct TensorParallelHooks {
  virtual ~TensorParallelHooks() = default;
  // tokens (B, T) and this rank's rows of the embedding table -> (B, T', dim)
  virtual torch::Tensor embed(const torch::Tensor& tokens, const torch::Tensor& weight) = 0;
  // a normalised residual (B, T', dim) -> the input of a sublayer (B, T, dim)
  virtual torch::Tensor sublayer_input(const torch::Tensor& x) = 0;
  // a sublayer's partial output (B, T, dim) -> its share of the residual update (B, T', dim)
  virtual torch::Tensor sublayer_output(const torch::Tensor& x) = 0;
  // the final normalised states (B, T', dim) and this rank's rows of the output weight -> logits
  // (B, T, vocab), or (B, T, vocab / tp) under loss parallel
  virtual torch::Tensor project(const torch::Tensor& h, const torch::Tensor& weight) = 0;
  // The same and labels (B, T) -> the summed cross-entropy of this rank's tokens, a fp32 scalar
  virtual torch::Tensor loss_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels) = 0;
};

// Called by the model where context parallelism changes attention: each rank holds T' = T / cp
// positions of every sequence (not contiguous under head-tail balancing), needs their RoPE rows,
// and its queries attend to the keys of the whole sequence.
struct ContextParallelHooks {
  virtual ~ContextParallelHooks() = default;
  // The rows of a per-position table (max_seq_len, ...) at this rank's positions -> (T', ...)
  virtual torch::Tensor position_rows(const torch::Tensor& table) = 0;
  // Causal attention by global position of this rank's queries (B, H, T', hd) over every rank's
  // keys and values (B, KV, T', hd) -> (B, H, T', hd)
  virtual torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) = 0;
};

// Called by an MoE layer where expert parallelism moves its token slots to the ranks that hold
// their experts and brings the experts' outputs back.
struct ExpertParallelHooks {
  virtual ~ExpertParallelHooks() = default;
  // The tokens [first, first + count) of the layer's n_tokens whose slots this rank routes: all of
  // them, unless the ranks of a tensor-parallel group share one replicated sequence's tokens.
  virtual std::pair<int64_t, int64_t> token_range(int64_t n_tokens) = 0;
  // rows (M, dim) grouped by expert, counts[e] of them for each of the layer's experts -> their
  // outputs (M, dim), computed where the experts live by `local`: this rank's experts on their rows
  // grouped by local expert, with one count per local expert.
  using LocalExperts = std::function<torch::Tensor(const torch::Tensor&, const std::vector<int64_t>&)>;
  virtual torch::Tensor run_experts(const torch::Tensor& rows, const std::vector<int64_t>& counts,
                                    const LocalExperts& local) = 0;
};

// How tensor parallelism lays out one parameter (TorchTitan's styles): the tensor dim cut over the
// tp ranks (0: ColwiseParallel linears [out, in], the vocab-sharded embedding and output; 1:
// RowwiseParallel linears and the routed experts' w1/w3 [E, hidden, dim]; 2: the experts' w2
// [E, dim, hidden]), or none: replicated (sequence-parallel norms, the MoE router), whose
// gradients are then summed over the tensor-parallel ranks.
struct TpLayout {
  std::optional<int64_t> dim;
  bool replicated() const { return !dim; }
};

// One FSDP unit (a fully_shard call of TorchTitan's): its parameters are gathered together.
struct FsdpUnitPlan {
  std::vector<std::string> params;    // FQNs
  bool reshard_after_forward = true;  // false where backward needs the weights at once or reads them again
  bool regather_for_backward = true;  // false where backward reads no weight (an embedding)
  bool kept_until_last_unit = false;  // read again by the last unit (a tied embedding)
};

struct ParallelPlan {
  std::vector<FsdpUnitPlan> fsdp_units;  // in forward order: ForwardHooks' unit numbers
  // The layer holding each weight, by FQN, and the weight's name in it: its member is what forward
  // reads (FSDP points it at gathered tensors while the registered parameters hold shards).
  struct Weight {
    std::string fqn;
    WeightModule* layer;
    std::string name;
    torch::Tensor* member;
  };
  std::vector<Weight> weights;
  ForwardHooks** hooks = nullptr;  // where the model looks for its unit hooks
  std::vector<std::pair<std::string, TpLayout>> tensor_parallel;  // every parameter, by FQN
  std::vector<TensorParallelHooks**> tensor_parallel_hooks;       // where the model looks for them
  std::vector<ContextParallelHooks**> context_parallel_hooks;     // likewise
  std::vector<ExpertParallelHooks**> expert_parallel_hooks;       // likewise
  // The routed experts' weights ([num_experts, ...]): expert parallelism cuts dim 0 (TorchTitan's
  // Shard(0) over ep) and FSDP shards them over their own group (efsdp), apart from their unit's others.
  std::vector<std::string> routed_experts;
};

}  // namespace titan
