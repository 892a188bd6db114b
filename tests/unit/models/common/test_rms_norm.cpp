// RMSNorm against torch's composite in float64: values and gradients of x and the weight, fp64, fp32
// and bf16, 3-D input, on the CPU (the one-pass kernels) and on CUDA where there is one.
#include <gtest/gtest.h>

#include "models/common/rms_norm.h"

namespace titan {
namespace {

TEST(RmsNorm, ValuesAndGradientsMatchFloat64) {
  torch::manual_seed(0);
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.push_back(torch::kCUDA);
  const int64_t B = 3, T = 17, D = 100;  // D: not a multiple of the kernels' 16 running sums
  auto x64 = (torch::randn({B, T, D}, torch::kFloat64) * 3).requires_grad_();
  auto w64 = (torch::rand({D}, torch::kFloat64) + 0.5).requires_grad_();
  auto g64 = torch::randn({B, T, D}, torch::kFloat64);
  auto y64 = x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + 1e-5) * w64;
  y64.backward(g64);
  for (const auto& device : devices)
    for (auto [dtype, tol] :
         {std::pair{torch::kFloat64, 1e-12}, std::pair{torch::kFloat32, 1e-5}, std::pair{torch::kBFloat16, 2e-2}}) {
      auto x = x64.detach().to(device, dtype).requires_grad_();
      auto w = w64.detach().to(device, dtype).requires_grad_();
      auto y = rms_norm(x, w, 1e-5);
      EXPECT_EQ(y.scalar_type(), dtype);
      y.backward(g64.to(device, dtype));
      auto err = [](const torch::Tensor& a, const torch::Tensor& b) {
        return ((a.cpu().to(torch::kFloat64) - b).abs().max() / b.abs().max()).item<double>();
      };
      EXPECT_LT(err(y, y64.detach()), tol) << device << " " << dtype;
      EXPECT_LT(err(x.grad(), x64.grad()), tol) << device << " " << dtype;
      EXPECT_LT(err(w.grad(), w64.grad()), tol) << device << " " << dtype;
    }
}

}  // namespace
}  // namespace titan
