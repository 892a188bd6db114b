#include "trainer/optimizer.h"

#include <cmath>

namespace titan {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, const JobConfig::Optimizer& config)
    : params_(std::move(named_params)),
      decoupled_(config.name == "AdamW"),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.eps),
      weight_decay_(config.weight_decay) {}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params_) {
    if (!param.grad().defined()) continue;
    auto grad = param.grad();
    auto& s = state_for(name, param);
    s.step.add_(1);
    const double step = s.step.item<double>();
    if (decoupled_) param.mul_(1 - lr * weight_decay_);
    else if (weight_decay_ != 0) grad = grad.add(param, weight_decay_);
    s.exp_avg.mul_(beta1_).add_(grad, 1 - beta1_);
    s.exp_avg_sq.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
    const double bias_correction1 = 1 - std::pow(beta1_, step);
    const double bias_correction2 = 1 - std::pow(beta2_, step);
    const double step_size = lr / bias_correction1;
    auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(eps_);
    param.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

AdamState& AdamW::state_for(const std::string& name, const torch::Tensor& param) {
  auto& s = state_[name];
  if (!s.exp_avg.defined()) {
    s.exp_avg = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.exp_avg_sq = torch::zeros_like(param, torch::MemoryFormat::Preserve);
    s.step = torch::zeros({}, torch::kFloat32);
  }
  return s;
}

void AdamW::init_state() {
  for (auto& [name, param] : params_) state_for(name, param);
}

nlohmann::json AdamW::param_groups() const {
  return {{"betas", {beta1_, beta2_}}, {"eps", eps_}, {"weight_decay", weight_decay_}, {"decoupled", decoupled_}};
}

void AdamW::zero_grad() {
  for (auto& [name, param] : params_) param.mutable_grad() = torch::Tensor();
}

double clip_grad_norm_(const std::vector<torch::Tensor>& params, double max_norm,
                       const std::function<double(double)>& sum_across) {
  torch::NoGradGuard no_grad;
  // Accumulated in float64: fp32 norms of large gradients are off by ~1e-4 relative, more than two
  // layouts of the same step may differ by.
  std::vector<torch::Tensor> norms;
  for (const auto& p : params)
    if (p.grad().defined()) norms.push_back(at::linalg_vector_norm(p.grad(), 2, c10::nullopt, false, torch::kFloat64));
  double sq = norms.empty() ? 0.0 : torch::stack(norms).pow(2).sum().item<double>();  // one sync for all parameters
  if (sum_across) sq = sum_across(sq);
  const double total = std::sqrt(sq);
  const double coef = std::min(1.0, max_norm / (total + 1e-6));
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().mul_(coef);
  return total;
}

}  // namespace titan
