#include "parallel/grad_norm.h"

#include <cmath>

namespace titan {

double clip_grad_norm_(const std::vector<torch::Tensor>& params, const std::vector<bool>& counted, double max_norm,
                       const std::function<double(double)>& sum_across) {
  TORCH_CHECK(counted.size() == params.size(), "clip_grad_norm_: one counted flag per parameter");
  torch::NoGradGuard no_grad;
  // Accumulated in float64: fp32 norms of large gradients are off by ~1e-4 relative, more than two
  // layouts of the same step may differ by.
  // Slices of 1M elements: the float64 conversion never copies a whole gradient (the mid model's
  // embedding gradient would be a 262 MB temporary).
  constexpr int64_t kSlice = 1 << 20;
  std::vector<torch::Tensor> norms;
  for (size_t k = 0; k < params.size(); ++k) {
    const auto& p = params[k];
    if (!p.grad().defined() || !counted[k]) continue;
    const auto flat = p.grad().reshape({-1});
    for (int64_t i = 0; i < flat.numel(); i += kSlice)
      norms.push_back(at::linalg_vector_norm(flat.narrow(0, i, std::min(kSlice, flat.numel() - i)), 2, std::nullopt,
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
