#include "trainer/optimizer.h"

#include <ATen/record_function.h>

#include <cmath>
#include <map>
#include <optional>

#include "trainer/adam_cpu.h"

namespace titan {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, const JobConfig::Optimizer& config)
    : params_(std::move(named_params)),
      decoupled_(config.name == "AdamW"),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.eps),
      weight_decay_(config.weight_decay) {
  for (auto& [name, param] : params_) {
    AdamState& s = state_[name];
    s.exp_avg = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.exp_avg_sq = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.step = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(param.device()));  // fused kernels: on the parameter's device
  }
}

void AdamW::step(double lr, double grad_coef) {
  RECORD_USER_SCOPE("Optimizer.step#AdamW.step");  // torch.optim's range name in profiler traces
  torch::NoGradGuard no_grad;
  // CPU parameters in fp32 or bf16: our kernel (trainer/adam_cpu.h, libtorch's arithmetic without its
  // gradient stores). The rest: libtorch's fused kernels (one pass over each parameter and its state),
  // one call per device and dtype as torch.optim groups them. Both read the step count, bumped first.
  struct Group {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
  };
  Group ours;
  std::map<std::pair<std::string, torch::ScalarType>, Group> groups;
  for (auto& [name, param] : params_) {
    if (!param.grad().defined()) continue;
    auto& s = state_.at(name);
    Group& g = adam_step_cpu_supported(param, param.grad(), s.exp_avg, s.exp_avg_sq)
                   ? ours
                   : groups[{param.device().str(), param.scalar_type()}];
    g.params.push_back(param);
    g.grads.push_back(param.grad());
    g.exp_avgs.push_back(s.exp_avg);
    g.exp_avg_sqs.push_back(s.exp_avg_sq);
    g.steps.push_back(s.step);
  }
  if (!ours.params.empty()) {
    at::_foreach_add_(ours.steps, 1);
    const AdamStep args{lr, beta1_, beta2_, eps_, weight_decay_, decoupled_, 1.0 / grad_coef};
    for (size_t i = 0; i < ours.params.size(); ++i)
      adam_step_cpu(ours.params[i], ours.grads[i], ours.exp_avgs[i], ours.exp_avg_sqs[i], ours.steps[i].item<double>(),
                    args);
  }
  for (auto& [key, g] : groups) {
    at::_foreach_add_(g.steps, 1);
    // libtorch's kernels divide each gradient by grad_scale as they read it, store the quotient back
    // and step on it unrounded. At 1 no gradient bit may change: no scale then.
    std::optional<torch::Tensor> grad_scale;
    if (grad_coef != 1.0)
      grad_scale =
          torch::full({}, 1.0 / grad_coef, torch::TensorOptions().dtype(torch::kFloat32).device(g.params[0].device()));
    if (decoupled_)
      at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, {}, g.steps, lr, beta1_, beta2_, weight_decay_,
                        eps_, /*amsgrad=*/false, /*maximize=*/false, grad_scale);
    else
      at::_fused_adam_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, {}, g.steps, lr, beta1_, beta2_, weight_decay_,
                       eps_, /*amsgrad=*/false, /*maximize=*/false, grad_scale);
  }
}

nlohmann::json AdamW::param_groups() const {
  return {{"betas", {beta1_, beta2_}}, {"eps", eps_}, {"weight_decay", weight_decay_}, {"decoupled", decoupled_}};
}

void AdamW::zero_grad() {
  for (auto& [name, param] : params_) param.mutable_grad() = torch::Tensor();
}

}  // namespace titan
