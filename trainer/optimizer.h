// Adam / AdamW with torch.optim semantics (per-parameter step count, bias correction, decoupled
// weight decay on every parameter for AdamW), state keyed by parameter FQN for checkpoints.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/common/torch_api.h"
#include "trainer/job_config.h"

namespace titan {

struct AdamState {
  torch::Tensor exp_avg;     // same shape as the parameter
  torch::Tensor exp_avg_sq;  // same shape as the parameter
  torch::Tensor step;        // 0-dim float32 on the parameter's device, as torch.optim's fused AdamW keeps it
};

class AdamW {
 public:
  // State (zeros) is made for every parameter at once, so a checkpoint can load into it before step 1.
  AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, const JobConfig::Optimizer& config);

  // One update of every parameter that has a gradient, at learning rate `lr`, with the gradients
  // first multiplied by `grad_coef` (the clip) as they are read. Afterwards the gradients of fp32 and
  // bf16 CPU parameters are as the backward left them (our kernel); the others hold the products
  // (libtorch's fused kernel stores them).
  void step(double lr, double grad_coef = 1.0);
  void zero_grad();
  // Hyper-parameters, as torch's param_groups (FQN-keyed tensors are in state()).
  nlohmann::json param_groups() const;

  const std::vector<std::pair<std::string, torch::Tensor>>& params() const { return params_; }
  std::map<std::string, AdamState>& state() { return state_; }

 private:
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::map<std::string, AdamState> state_;
  bool decoupled_;  // AdamW: decay the weights; Adam: add weight_decay * param to the gradient
  double beta1_, beta2_, eps_, weight_decay_;
};

}  // namespace titan
