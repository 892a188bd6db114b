// TorchTitan's mixture-of-experts layer (torchtitan/models/moe/moe.py): a token-choice top-k router
// with auxiliary-loss-free balancing (a bias that chooses experts but does not scale them),
// routed SwiGLU experts held as [E, ...] tensors, and shared experts every token passes through.
// Knows no ranks. Parameter names are TorchTitan's: experts.w1|w2|w3 (no .weight),
// router.gate.weight, shared_experts.w1|w2|w3.weight; the persistent buffer expert_bias.
#pragma once

#include <utility>
#include <vector>

#include "models/common/feed_forward.h"
#include "models/common/layers.h"
#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "models/moe/moe_args.h"

namespace titan {

// The gate scores each token for each expert in fp32; the top k of score + bias choose.
class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t dim, const MoEArgs& args, const torch::TensorOptions& options);
  // x (N, dim), expert_bias (E,) or undefined -> top_scores (N, k) fp32 (without the bias), experts (N, k) int64
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& expert_bias);
  Linear gate{nullptr};

 private:
  MoEArgs args_;
};
TORCH_MODULE(Router);

// E SwiGLU experts: w1, w3 (E, hidden, dim), w2 (E, dim, hidden).
class GroupedExpertsImpl : public WeightModule {
 public:
  GroupedExpertsImpl(int64_t dim, int64_t hidden_dim, int64_t num_experts, const torch::TensorOptions& options);
  // x (M, dim): rows grouped by expert, counts[e] rows for expert e in order -> (M, dim)
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& counts);
  torch::Tensor w1, w2, w3;
};
TORCH_MODULE(GroupedExperts);

class MoEImpl : public torch::nn::Module {
 public:
  MoEImpl(int64_t dim, int64_t hidden_dim, const MoEArgs& args, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, dim) -> (B, T, dim)
  const MoEArgs& args() const { return args_; }

  GroupedExperts experts{nullptr};
  Router router{nullptr};
  FeedForward shared_experts{nullptr};  // absent without shared experts
  torch::Tensor expert_bias;            // (E,) fp32, persistent; absent without load_balance_coeff
  torch::Tensor tokens_per_expert;      // (E,) fp32 tokens routed since the last bias update, not saved
  ExpertParallelHooks* ep = nullptr;    // the experts live on other ranks too; not owned

 private:
  MoEArgs args_;
};
TORCH_MODULE(MoE);

// The auxiliary-loss-free bias update of TorchTitan's optimizer pre-step hook, from the layer's
// tokens_per_expert summed over the ranks that saw different tokens:
// bias += coeff * (sign(mean - n) - mean(sign(mean - n))).
void update_expert_bias(const torch::Tensor& expert_bias, const torch::Tensor& tokens_per_expert, double coeff);

}  // namespace titan
