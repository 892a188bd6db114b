// torch.nn.utils.clip_grad_norm_ over a model whose gradients may be split and replicated across
// ranks: the total 2-norm counts every piece once (each rank sums the squares of the pieces it
// owns, in float64, and `sum_across` adds the ranks' sums up), then every local gradient is
// scaled by min(1, max_norm / (total + 1e-6)).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <vector>

namespace titan {

// `counted[i]`: whether params[i]'s gradient enters this rank's sum. Returns the pre-clip norm.
double clip_grad_norm_(const std::vector<torch::Tensor>& params, const std::vector<bool>& counted, double max_norm,
                       const std::function<double(double)>& sum_across = {});

}  // namespace titan
