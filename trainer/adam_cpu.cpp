#include "trainer/adam_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "models/common/cpu_kernel.h"

namespace titan {
namespace {

// The step's constants in fp32 (libtorch's opmath). The loop runs every operation (no branch, so it
// vectorizes): multiplying by an inverse grad_scale of 1, decaying by 1 (Adam) or adding 0 * param
// (AdamW) changes no bit of a finite parameter.
struct Constants {
  float inv_grad_scale, decay, coupled_decay, lerp_coef, beta2, sq_coef, inv_bc2_sqrt, eps, neg_step_size;
  bool lerp_small;
};

// libtorch's order of operations, with the two fused multiply-adds its built vector path computes
// (the lerp's, written as one in its source, and exp_avg_sq's, which its compiler fuses: measured):
// exp_avg.lerp_(grad, 1 - beta1), exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad,
// param += -step_size * exp_avg / (sqrt(exp_avg_sq) / sqrt(bc2) + eps); the gradient's division by
// grad_scale and the square root's by sqrt(bc2) as products with their reciprocals.
TITAN_ALWAYS_INLINE void adam_loop(float* __restrict param, const float* __restrict grad, float* __restrict exp_avg,
                                   float* __restrict exp_avg_sq, int64_t n,
                                   const Constants k) {  // k: a copy no store aliases
  for (int64_t i = 0; i < n; ++i) {
    float p = cpu::load(param[i]);
    const float g = cpu::load(grad[i]) * k.inv_grad_scale + p * k.coupled_decay;  // Adam: + weight_decay * param
    p = p * k.decay;                                                              // AdamW: * (1 - lr * weight_decay)
    const float m0 = cpu::load(exp_avg[i]);
    const float m = std::fma(k.lerp_coef, g - m0, k.lerp_small ? m0 : g);
    const float v = std::fma(k.sq_coef * g, g, cpu::load(exp_avg_sq[i]) * k.beta2);
    const float denom = std::sqrt(v) * k.inv_bc2_sqrt + k.eps;
    cpu::store(m, exp_avg + i);
    cpu::store(v, exp_avg_sq + i);
    cpu::store(p + k.neg_step_size * m / denom, param + i);
  }
}

TITAN_CPU_CLONES void adam_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                               const Constants& k) {
  adam_loop(param, grad, exp_avg, exp_avg_sq, n, k);
}

// bf16 through fp32 chunks (cpu::widen; the rounding on the way back is cpu::store's).
TITAN_CPU_CLONES void adam_bf16(uint16_t* param, const uint16_t* grad, uint16_t* exp_avg, uint16_t* exp_avg_sq,
                                int64_t n, const Constants& k) {
  constexpr int64_t kChunk = 512;
  alignas(64) float p[kChunk], g[kChunk], m[kChunk], v[kChunk];
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t c = std::min(kChunk, n - begin);
    cpu::widen(param + begin, c, p), cpu::widen(grad + begin, c, g);
    cpu::widen(exp_avg + begin, c, m), cpu::widen(exp_avg_sq + begin, c, v);
    adam_loop(p, g, m, v, c, k);
    for (int64_t i = 0; i < c; ++i) {
      cpu::store(p[i], param + begin + i), cpu::store(m[i], exp_avg + begin + i);
      cpu::store(v[i], exp_avg_sq + begin + i);
    }
  }
}

}  // namespace

bool adam_step_cpu_supported(const torch::Tensor& param, const torch::Tensor& grad, const torch::Tensor& exp_avg,
                             const torch::Tensor& exp_avg_sq) {
  const auto dtype = param.scalar_type();
  return param.is_cpu() && (dtype == torch::kFloat32 || dtype == torch::kBFloat16) && grad.scalar_type() == dtype &&
         exp_avg.scalar_type() == dtype && exp_avg_sq.scalar_type() == dtype && grad.is_cpu() &&
         param.is_contiguous() && exp_avg.is_contiguous() && exp_avg_sq.is_contiguous() &&
         grad.sizes() == param.sizes() && exp_avg.sizes() == param.sizes() && exp_avg_sq.sizes() == param.sizes();
}

void adam_step_cpu(const torch::Tensor& param, const torch::Tensor& grad_in, const torch::Tensor& exp_avg,
                   const torch::Tensor& exp_avg_sq, double step, const AdamStep& a) {
  TORCH_CHECK(adam_step_cpu_supported(param, grad_in, exp_avg, exp_avg_sq), "adam_step_cpu: unsupported parameter ",
              param.sizes(), " ", param.scalar_type());
  const auto grad = grad_in.contiguous();
  // As libtorch computes them, in double (torch.optim's unfused formulas), then rounded to fp32.
  const double bias_correction1 = 1 - std::pow(a.beta1, step), bias_correction2 = 1 - std::pow(a.beta2, step);
  const float lerp_weight = static_cast<float>(1 - a.beta1);
  Constants k;
  k.inv_grad_scale = static_cast<float>(1 / a.grad_scale);
  k.decay = a.decoupled ? static_cast<float>(1 - a.lr * a.weight_decay) : 1.f;
  k.coupled_decay = a.decoupled ? 0.f : static_cast<float>(a.weight_decay);
  k.lerp_small = std::abs(lerp_weight) < 0.5f;
  k.lerp_coef = k.lerp_small ? lerp_weight : lerp_weight - 1.f;
  k.beta2 = static_cast<float>(a.beta2);
  k.sq_coef = static_cast<float>(1 - a.beta2);
  k.inv_bc2_sqrt = static_cast<float>(1 / std::sqrt(bias_correction2));
  k.eps = static_cast<float>(a.eps);
  k.neg_step_size = static_cast<float>(-(a.lr / bias_correction1));
  const bool bf16 = param.scalar_type() == torch::kBFloat16;
  at::parallel_for(0, param.numel(), 16384, [&](int64_t begin, int64_t end) {
    if (bf16)
      adam_bf16(cpu::mutable_ptr<uint16_t>(param, begin), cpu::ptr<uint16_t>(grad, begin),
                cpu::mutable_ptr<uint16_t>(exp_avg, begin), cpu::mutable_ptr<uint16_t>(exp_avg_sq, begin), end - begin,
                k);
    else
      adam_f32(cpu::mutable_ptr<float>(param, begin), cpu::ptr<float>(grad, begin),
               cpu::mutable_ptr<float>(exp_avg, begin), cpu::mutable_ptr<float>(exp_avg_sq, begin), end - begin, k);
  });
  // Written in place as libtorch's in-place ops write: a graph that saved them sees the change.
  for (const auto* t : {&param, &exp_avg, &exp_avg_sq}) torch::autograd::impl::bump_version(*t);
}

}  // namespace titan
