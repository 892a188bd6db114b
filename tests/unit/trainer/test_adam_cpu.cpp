// Our CPU Adam / AdamW step against libtorch's fused kernel (at::_fused_adamw_ / _fused_adam_, what
// torch.optim's fused=True runs) from the same state: parameters and state within a few fp32
// roundings (bf16: all but 0.01% of the elements within one bf16 rounding) of its, three steps,
// fp32 and bf16, with and without a gradient scale and weight decay, on lengths that leave vector
// tails and cross parallel chunks, a strided gradient and an empty parameter; the gradients ours
// reads stay as they were.
#include <gtest/gtest.h>

#include "models/common/torch_api.h"
#include "trainer/adam_cpu.h"

namespace titan {
namespace {

// The share of a's elements farther from b's than a few fp32 roundings of b's largest magnitude, in
// bf16 plus one bf16 rounding (2^-7 of the larger magnitude).
double share_apart(const torch::Tensor& a, const torch::Tensor& b) {
  const auto a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  const double floor = 1e-6 * b64.abs().max().item<double>();
  const double ulps = a.scalar_type() == torch::kBFloat16 ? 1.0 / 128 : 0.0;
  return ((a64 - b64).abs() > torch::maximum(a64.abs(), b64.abs()) * ulps + floor)
      .to(torch::kFloat64)
      .mean()
      .item<double>();
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
            const AdamStep args{0.05, 0.9, 0.95, 1e-8, weight_decay, decoupled, grad_scale};  // lr: bf16 moves
            std::optional<torch::Tensor> scale;
            if (grad_scale != 1.0) scale = torch::full({}, grad_scale);
            for (int s = 1; s <= 3; ++s) {
              // n = 4099: every second element of a longer gradient (read through a contiguous copy)
              const auto grad =
                  n == 4099 ? torch::randn({2 * n}).to(dtype).slice(0, 0, 2 * n, 2) : torch::randn({n}).to(dtype);
              const auto ref_grad = grad.clone(), read = grad.clone(), before = ref_param.clone();
              param.copy_(ref_param), m.copy_(ref_m), v.copy_(ref_v);  // each step from the same state
              step += 1;
              ref_step += 1;
              adam_step_cpu(param, grad, m, v, step.item<double>(), args);
              if (decoupled)
                at::_fused_adamw_({ref_param}, {ref_grad}, {ref_m}, {ref_v}, {}, {ref_step}, args.lr, args.beta1,
                                  args.beta2, weight_decay, args.eps, false, false, scale);
              else
                at::_fused_adam_({ref_param}, {ref_grad}, {ref_m}, {ref_v}, {}, {ref_step}, args.lr, args.beta1,
                                 args.beta2, weight_decay, args.eps, false, false, scale);
              // fp32: every element; bf16: all but the few whose update's sign turns on a last-bit
              // difference (Adam's grad + weight_decay * param near 0), and the step moves them all.
              const double allowed = dtype == torch::kFloat32 ? 0.0 : 1e-4;
              ASSERT_GT(share_apart(before, ref_param), 0.5) << where << ": the step moves too few parameters";
              EXPECT_LE(share_apart(param, ref_param), allowed) << where << " step " << s << " param";
              EXPECT_LE(share_apart(m, ref_m), allowed) << where << " step " << s << " exp_avg";
              EXPECT_LE(share_apart(v, ref_v), allowed) << where << " step " << s << " exp_avg_sq";
              EXPECT_TRUE(torch::equal(grad, read)) << where << " step " << s << " gradient";
            }
          }
  auto empty = torch::zeros({0});  // a parameter with no elements: nothing to do
  adam_step_cpu(empty, empty, empty.clone(), empty.clone(), 1.0, AdamStep{0.05, 0.9, 0.95, 1e-8, 0.1, true, 1.0});
}

}  // namespace
}  // namespace titan
