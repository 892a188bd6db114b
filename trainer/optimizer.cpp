#include "trainer/optimizer.h"

#include <cmath>

#include "trainer/adamw_kernel.h"

namespace titan {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> named_params, const JobConfig::Optimizer& config)
    : params_(std::move(named_params)),
      decoupled_(config.name == "AdamW"),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.eps),
      weight_decay_(config.weight_decay) {}

namespace {

void fused_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamCoefficients& c) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) { adamw_update_range(p, g, m, v, begin, end, c); });
}

bool fusable(const torch::Tensor& param, const torch::Tensor& grad, const AdamState& s) {
  for (const auto* t : {&param, &grad, &s.exp_avg, &s.exp_avg_sq})
    if (t->scalar_type() != torch::kFloat32 || !t->is_contiguous() || !t->device().is_cpu()) return false;
  return true;
}

}  // namespace

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params_) {
    if (!param.grad().defined()) continue;
    auto grad = param.grad();
    auto& s = state_for(name, param);
    s.step.add_(1);
    const double step = s.step.item<double>();
    const double bias_correction1 = 1 - std::pow(beta1_, step);
    const double bias_correction2 = 1 - std::pow(beta2_, step);
    const double step_size = lr / bias_correction1;
    if (fusable(param, grad, s)) {
      const AdamCoefficients c{decoupled_,
                               static_cast<float>(weight_decay_),
                               static_cast<float>(1 - lr * weight_decay_),
                               static_cast<float>(beta1_),
                               static_cast<float>(beta2_),
                               static_cast<float>(std::sqrt(bias_correction2)),
                               static_cast<float>(eps_),
                               static_cast<float>(step_size)};
      fused_update(param.data_ptr<float>(), grad.data_ptr<float>(), s.exp_avg.data_ptr<float>(),
                   s.exp_avg_sq.data_ptr<float>(), param.numel(), c);
      for (auto* t : {&param, &s.exp_avg, &s.exp_avg_sq}) torch::autograd::impl::bump_version(*t);  // as in-place ops do
      continue;
    }
    // Other dtypes and layouts: torch.optim's op-by-op form.
    if (decoupled_) param.mul_(1 - lr * weight_decay_);
    else if (weight_decay_ != 0) grad = grad.add(param, weight_decay_);
    s.exp_avg.mul_(beta1_).add_(grad, 1 - beta1_);
    s.exp_avg_sq.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
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
  // Slices of 1M elements: the float64 conversion never copies a whole gradient (the mid model's
  // embedding gradient would be a 262 MB temporary).
  constexpr int64_t kSlice = 1 << 20;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    const auto flat = p.grad().reshape({-1});
    for (int64_t i = 0; i < flat.numel(); i += kSlice)
      norms.push_back(at::linalg_vector_norm(flat.narrow(0, i, std::min(kSlice, flat.numel() - i)), 2, c10::nullopt,
                                             false, torch::kFloat64));
  }
  double sq = norms.empty() ? 0.0 : torch::stack(norms).pow(2).sum().item<double>();  // one sync for all parameters
  if (sum_across) sq = sum_across(sq);
  const double total = std::sqrt(sq);
  const double coef = std::min(1.0, max_norm / (total + 1e-6));
  for (const auto& p : params)
    if (p.grad().defined()) p.grad().mul_(coef);
  return total;
}

}  // namespace titan
