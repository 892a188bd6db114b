// One fp32 parameter's Adam/AdamW update in one pass over its memory, as torch's fused AdamW does
// on GPUs: the op-by-op form reads and writes the parameter and its state ~9 times.
#pragma once

#include <cstdint>

namespace titan {

struct AdamCoefficients {
  bool decoupled;      // AdamW: decay the weight; Adam: add weight_decay * param to the gradient
  float weight_decay;  // Adam's gradient term
  float decay;         // AdamW's factor, 1 - lr * weight_decay
  float beta1, beta2;
  float sqrt_bias_correction2;
  float eps;
  float step_size;  // lr / bias_correction1
};

// Elements [begin, end) of one parameter p, its gradient g and its state m (exp_avg), v (exp_avg_sq).
void adamw_update_range(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end,
                        const AdamCoefficients& c);

}  // namespace titan
