// SwiGLU's gate against silu(a) * b in float64: values and both gradients in fp32 and bf16 on the CPU
// (the one-pass kernels, over a range that reaches exp's clamps) and on CUDA where there is one.
#include <gtest/gtest.h>

#include "models/common/swiglu.h"

namespace titan {
namespace {

TEST(Swiglu, ValuesAndGradientsMatchFloat64) {
  torch::manual_seed(0);
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  // 3 x 5 x 4099: not a multiple of any vector width; a spans [-120, 120] so exp_f32's clamps are hit.
  auto a64 = (torch::randn({3, 5, 4099}, torch::kFloat64) * 4).requires_grad_();
  {
    torch::NoGradGuard no_grad;
    a64.view(-1).narrow(0, 0, 241).copy_(torch::linspace(-120, 120, 241, torch::kFloat64));
  }
  auto b64 = torch::randn({3, 5, 4099}, torch::kFloat64).requires_grad_();
  auto g64 = torch::randn({3, 5, 4099}, torch::kFloat64);
  auto y64 = a64 * torch::sigmoid(a64) * b64;
  y64.backward(g64);
  for (const auto& device : devices)
    for (auto [dtype, tol] : {std::pair{torch::kFloat32, 1e-6}, std::pair{torch::kBFloat16, 8e-3}}) {
      auto a = a64.detach().to(device, dtype).requires_grad_();
      auto b = b64.detach().to(device, dtype).requires_grad_();
      auto y = swiglu(a, b);
      EXPECT_EQ(y.scalar_type(), dtype);
      y.backward(g64.to(device, dtype));
      auto err = [](const torch::Tensor& x,
                    const torch::Tensor& exact) {  // largest error relative to the largest value
        return ((x.cpu().to(torch::kFloat64) - exact).abs().max() / exact.abs().max()).item<double>();
      };
      // bf16: the inputs' own rounding (2^-9) dominates; fp32: a few ulps of the largest value.
      EXPECT_LT(err(y, y64.detach()), tol) << device << " " << dtype;
      EXPECT_LT(err(a.grad(), a64.grad()), tol) << device << " " << dtype;
      EXPECT_LT(err(b.grad(), b64.grad()), tol) << device << " " << dtype;
    }
}

// Element by element against float64 of the same (already rounded) fp32 inputs: the kernel's own error.
TEST(Swiglu, Fp32KernelWithinFourUlps) {
  auto a = torch::linspace(-30, 30, 100003, torch::kFloat32), b = torch::randn({100003});
  const auto exact = (a.to(torch::kFloat64) * torch::sigmoid(a.to(torch::kFloat64)) * b.to(torch::kFloat64));
  const auto ulp = exact.abs().clamp_min(1e-30) * std::ldexp(1.0, -23);
  EXPECT_LT(((swiglu(a, b).to(torch::kFloat64) - exact).abs() / ulp).max().item<double>(), 4);
}

TEST(Swiglu, MismatchedInputsNameBoth) {
  try {
    swiglu(torch::zeros({2, 3}), torch::zeros({2, 4}));
    FAIL() << "no error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu: a [2, 3] Float on cpu and b [2, 4] Float on cpu differ"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace titan
