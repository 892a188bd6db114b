// AdamW against hand-computed numbers and float64 formulas.
#include <gtest/gtest.h>

#include "trainer/optimizer.h"

namespace titan {
namespace {

TEST(AdamW, FirstStepByHand) {
  // Step 1: m = 0.1 g, v = 0.05 g^2, bias-corrected m/sqrt(v) = sign(g): p <- p(1 - lr wd) - lr sign(g).
  auto p = torch::tensor({1.0f, -2.0f}).requires_grad_(true);
  p.mutable_grad() = torch::tensor({0.5f, -3.0f});
  JobConfig::Optimizer c;  // beta1 0.9, beta2 0.95, eps 1e-8, wd 0.1
  AdamW opt({{"w", p}}, c);
  opt.step(0.01);
  EXPECT_NEAR(p[0].item<double>(), 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_NEAR(p[1].item<double>(), -2.0 * (1 - 0.001) + 0.01, 1e-6);
  EXPECT_EQ(opt.state()["w"].step.item<double>(), 1.0);
  EXPECT_NEAR(opt.state()["w"].exp_avg[1].item<double>(), -0.3, 1e-7);
  EXPECT_NEAR(opt.state()["w"].exp_avg_sq[1].item<double>(), 0.05 * 9, 1e-6);
}

TEST(AdamW, AdamAddsDecayToTheGradient) {
  auto p = torch::tensor({1.0f}).requires_grad_(true);
  p.mutable_grad() = torch::tensor({0.0f});
  JobConfig::Optimizer c;
  c.name = "Adam";
  AdamW opt({{"w", p}}, c);
  opt.step(0.01);  // effective gradient 0.1 > 0: one lr step down, no decoupled decay
  EXPECT_NEAR(p[0].item<double>(), 1.0 - 0.01, 1e-6);
}

// The fused update against float64 arithmetic of torch.optim's formulas, three steps, on enough
// elements to cross parallel chunks and vector tails; a bf16 parameter in the same optimizer.
TEST(AdamW, FusedUpdateFollowsTorchOptimInFloat64) {
  for (const std::string name : {"AdamW", "Adam"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(1);
    auto p = torch::randn({70001}).requires_grad_(true);
    auto p64 = p.detach().to(torch::kFloat64);
    auto m = torch::zeros_like(p64), v = torch::zeros_like(p64);
    JobConfig::Optimizer c;
    c.name = name;
    c.weight_decay = 0.1;
    AdamW opt({{"w", p}}, c);
    const double lr = 1e-3;
    for (int step = 1; step <= 3; ++step) {
      auto g = torch::randn({70001});
      p.mutable_grad() = g;
      opt.step(lr);
      auto g64 = g.to(torch::kFloat64);
      if (name == "AdamW") p64 = p64 * (1 - lr * c.weight_decay);
      else g64 = g64 + c.weight_decay * p64;
      m = m * c.beta1 + (1 - c.beta1) * g64;
      v = v * c.beta2 + (1 - c.beta2) * g64 * g64;
      const double bc1 = 1 - std::pow(c.beta1, step), bc2 = 1 - std::pow(c.beta2, step);
      p64 = p64 - lr / bc1 * m / (v.sqrt() / std::sqrt(bc2) + c.eps);
    }
    EXPECT_LT((p.detach().to(torch::kFloat64) - p64).abs().max().item<double>(), 1e-6);
    EXPECT_LT((opt.state()["w"].exp_avg_sq.to(torch::kFloat64) - v).abs().max().item<double>(), 1e-6);
  }
  auto b = torch::tensor({1.0f, -2.0f}).to(torch::kBFloat16).requires_grad_(true);
  b.mutable_grad() = torch::tensor({0.5f, -3.0f}).to(torch::kBFloat16);
  AdamW opt({{"b", b}}, JobConfig::Optimizer{});
  opt.step(0.01);
  EXPECT_NEAR(b[0].item<double>(), 0.98, 0.01);  // ~1*(1-0.001) - 0.01 in bf16
}

// The clip inside the fused pass on `device`: two steps with coefficient 0.3 against float64 AdamW on
// the multiplied gradients (fp32 and bf16), which the gradients then hold on CUDA (libtorch's kernel
// stores them) and not on the CPU (ours reads them only); at coefficient 1 no gradient bit changes.
void check_clip_in_fused_pass(torch::Device device) {
  torch::manual_seed(2);
  const auto fp32 = torch::TensorOptions().device(device);
  auto p = torch::randn({70001}, fp32).requires_grad_(true);
  auto b = torch::randn({4099}, fp32).to(torch::kBFloat16).requires_grad_(true);
  auto p64 = p.detach().to(torch::kFloat64), b64 = b.detach().to(torch::kFloat64);
  auto m = torch::zeros_like(p64), v = torch::zeros_like(p64), mb = torch::zeros_like(b64), vb = torch::zeros_like(b64);
  JobConfig::Optimizer c;
  AdamW opt({{"p", p}, {"b", b}}, c);
  const double lr = 1e-3;
  auto reference = [&](torch::Tensor& x, torch::Tensor& m1, torch::Tensor& v1, const torch::Tensor& g, int step) {
    x = x * (1 - lr * c.weight_decay);
    m1 = m1 * c.beta1 + (1 - c.beta1) * g;
    v1 = v1 * c.beta2 + (1 - c.beta2) * g * g;
    const double bc1 = 1 - std::pow(c.beta1, step), bc2 = 1 - std::pow(c.beta2, step);
    x = x - lr / bc1 * m1 / (v1.sqrt() / std::sqrt(bc2) + c.eps);
  };
  for (int step = 1; step <= 3; ++step) {
    const double coef = step < 3 ? 0.3 : 1.0;
    const auto g = torch::randn({70001}, fp32), gb = torch::randn({4099}, fp32).to(torch::kBFloat16);
    p.mutable_grad() = g.clone();
    b.mutable_grad() = gb.clone();
    opt.step(lr, coef);
    const auto g64 = g.to(torch::kFloat64) * coef, gb64 = gb.to(torch::kFloat64) * coef;
    reference(p64, m, v, g64, step);
    reference(b64, mb, vb, gb64, step);
    if (coef == 1.0 || device.is_cpu()) {  // our CPU kernel only reads them
      EXPECT_TRUE(torch::equal(p.grad(), g) && torch::equal(b.grad(), gb)) << "step " << step;
    } else {  // libtorch's CUDA kernel stores the products
      EXPECT_LT((p.grad().to(torch::kFloat64) - g64).abs().max().item<double>(), 1e-6) << "step " << step;
      EXPECT_LT(((b.grad().to(torch::kFloat64) - gb64).abs() / gb64.abs().clamp_min(1e-30)).max().item<double>(),
                1 / 256.0)
          << "step " << step;  // rounded once to bf16
    }
  }
  EXPECT_LT((p.detach().to(torch::kFloat64) - p64).abs().max().item<double>(), 1e-6);
  EXPECT_LT(((b.detach().to(torch::kFloat64) - b64).abs() / b64.abs().clamp_min(1e-3)).max().item<double>(), 1 / 64.0);
}

TEST(AdamW, ClipCoefficientScalesTheGradientsInTheFusedPass) {
  check_clip_in_fused_pass(torch::kCPU);
}

TEST(AdamW, CudaClipCoefficientScalesTheGradientsInTheFusedPass) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a GPU (none visible)";
  check_clip_in_fused_pass(torch::kCUDA);
}

}  // namespace
}  // namespace titan
