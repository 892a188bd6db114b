// One Adam / AdamW step of a CPU parameter and its state in fp32 arithmetic, as libtorch's fused CPU
// kernel (at::_fused_adamw_ / _fused_adam_, which torch.optim's fused=True calls) computes it, but
// multiplying by the reciprocals of grad_scale and sqrt(bias_correction2) where that one divides
// (division and square root, not memory, bound that loop), and without storing the divided
// gradients back: with a grad_scale (our clip) that kernel writes every gradient, 2 of the 16 bytes
// a bf16 parameter's step moves (4 of 32 in fp32). Within a few fp32 roundings of it (unit test).
#pragma once

#include "models/common/torch_api.h"

namespace titan {

struct AdamStep {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;     // AdamW: decay the weights; Adam: add weight_decay * param to the gradient
  double grad_scale;  // the gradients are divided by it as they are read (1: as they are)
};

// Whether adam_step_cpu takes these: CPU, fp32 or bf16 alike, contiguous, one shape.
bool adam_step_cpu_supported(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                             const torch::Tensor& exp_avg_sq);

// param, exp_avg, exp_avg_sq updated in place at step count `step` (already incremented); grad is read only.
void adam_step_cpu(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                   const torch::Tensor& exp_avg_sq, double step, const AdamStep& args);

}  // namespace titan
