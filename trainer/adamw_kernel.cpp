// Built with -O3 -fno-math-errno and without libtorch's headers (see CMakeLists.txt): -O2 leaves
// this loop scalar, and sqrt's errno would keep it so.
#include "trainer/adamw_kernel.h"

#include <cmath>

namespace titan {

// Compiled for AVX2 and for baseline x86-64, picked at run time; neither uses FMA, so every clone
// rounds as the op-by-op form and as the others do (replicas on different CPUs stay identical).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
void adamw_update_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                        int64_t begin, int64_t end, const AdamCoefficients& c) {
  // The factor each variant does not use is exact (1 or 0): one branch-free loop for both.
  const float decay = c.decoupled ? c.decay : 1.0f, grad_decay = c.decoupled ? 0.0f : c.weight_decay;
  const float beta1 = c.beta1, beta2 = c.beta2, sqrt_bc2 = c.sqrt_bias_correction2, eps = c.eps;
  const float neg_step = -c.step_size;
  // Each line is one op of the op-by-op form, in its order and float rounding.
  for (int64_t i = begin; i < end; ++i) {
    p[i] = p[i] * decay;
    const float grad = g[i] + grad_decay * p[i];
    m[i] = m[i] * beta1 + (1 - beta1) * grad;
    v[i] = v[i] * beta2 + (1 - beta2) * (grad * grad);
    const float denom = std::sqrt(v[i]) / sqrt_bc2 + eps;
    p[i] = p[i] + neg_step * (m[i] / denom);
  }
}

}  // namespace titan
