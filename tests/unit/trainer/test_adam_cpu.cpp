// Our CPU Adam / AdamW step against libtorch's fused kernel (at::_fused_adamw_ / _fused_adam_, what
// torch.optim's fused=True runs): parameters and state within a few fp32 roundings (one bf16 rounding
// in bf16) of their largest magnitude, three steps, fp32 and bf16, with and without a gradient scale and weight decay,
// on lengths that leave vector tails and cross parallel chunks; the gradients ours reads stay as they were.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/adam_cpu.h"

namespace titan {
namespace {

// Largest |a - b| relative to b's largest magnitude.
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  const auto a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  return ((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-30)).item<double>();
}

TEST(AdamStepCpu, FollowsLibtorchsFusedKernel) {
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16})
    for (const bool decoupled : {true, false})
      for (const double weight_decay : {0.1, 0.0})
        for (const double grad_scale : {1.0, 1.0 / 0.37})
          for (const int64_t n : {int64_t{1}, int64_t{4099}, int64_t{70001}}) {
            const std::string where =
                c10::str(dtype, decoupled ? " AdamW" : " Adam", " wd ", weight_decay, " scale ", grad_scale, " n ", n);
            torch::manual_seed(3);
            auto param = torch::randn({n}).to(dtype), m = torch::zeros({n}).to(dtype), v = torch::zeros({n}).to(dtype);
            auto ref_param = param.clone(), ref_m = m.clone(), ref_v = v.clone();
            auto ref_step = torch::zeros({}), step = torch::zeros({});
            const AdamStep args{1e-3, 0.9, 0.95, 1e-8, weight_decay, decoupled, grad_scale};
            std::optional<torch::Tensor> scale;
            if (grad_scale != 1.0) scale = torch::full({}, grad_scale);
            for (int s = 1; s <= 3; ++s) {
              const auto grad = torch::randn({n}).to(dtype), ref_grad = grad.clone(), read = grad.clone();
              step += 1;
              ref_step += 1;
              adam_step_cpu(param, grad, m, v, step.item<double>(), args);
              if (decoupled)
                at::_fused_adamw_({ref_param}, {ref_grad}, {ref_m}, {ref_v}, {}, {ref_step}, args.lr, args.beta1,
                                  args.beta2, weight_decay, args.eps, false, false, scale);
              else
                at::_fused_adam_({ref_param}, {ref_grad}, {ref_m}, {ref_v}, {}, {ref_step}, args.lr, args.beta1,
                                 args.beta2, weight_decay, args.eps, false, false, scale);
              const double bound = dtype == torch::kFloat32 ? 1e-6 : 1.0 / 128;  // a few fp32 ulps, one bf16 ulp
              EXPECT_LE(relative_error(param, ref_param), bound) << where << " step " << s << " param";
              EXPECT_LE(relative_error(m, ref_m), bound) << where << " step " << s << " exp_avg";
              EXPECT_LE(relative_error(v, ref_v), bound) << where << " step " << s << " exp_avg_sq";
              EXPECT_TRUE(torch::equal(grad, read)) << where << " step " << s << " gradient";
            }
          }
}

}  // namespace
}  // namespace titan
