// torch.nn.utils.clip_grad_norm_ over a model whose gradients may be split and replicated across
// ranks, in two parts: the total 2-norm counts every piece once (each rank sums the squares of the
// pieces it owns, in float64, and `sum_across` adds the ranks' sums up); the coefficient
// min(1, max_norm / (total + 1e-6)) scales the gradients inside the optimizer's fused pass
// (AdamW::step), not in a pass of its own.
#pragma once

#include <algorithm>
#include <functional>
#include <vector>

#include "models/common/torch_api.h"

namespace titan {

// `counted[i]`: whether params[i]'s gradient enters this rank's sum. No gradient changes.
double grad_norm(const std::vector<torch::Tensor>& params, const std::vector<bool>& counted,
                 const std::function<double(double)>& sum_across = {});

// What clipping to max_norm multiplies every gradient by, given their total norm.
inline double clip_coefficient(double norm, double max_norm) {
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace titan
