#include "parallel/grad_norm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "models/common/cpu_kernel.h"

namespace titan {
namespace {

// sum of x^2 in float64.
template <typename T>
TITAN_ALWAYS_INLINE double sum_of_squares_loop(const T* x, int64_t n) {
  return cpu::sum16<double>(n, [&](int64_t k) {
    const double v = cpu::load(x[k]);
    return v * v;
  });
}
TITAN_CPU_CLONES double sum_of_squares_f32(const float* x, int64_t n) {
  return sum_of_squares_loop(x, n);
}
// Widened to fp32 1024 at a time (cpu::widen; 9 GB/s when the loop summed 16-bit loads, 18 for fp32).
TITAN_CPU_CLONES double sum_of_squares_bf16(const uint16_t* x, int64_t n) {
  constexpr int64_t kChunk = 1024;
  alignas(64) float wide[kChunk];
  double sum = 0;
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t c = std::min(kChunk, n - begin);
    cpu::widen(x + begin, c, wide);
    sum += sum_of_squares_loop(wide, c);
  }
  return sum;
}
TITAN_CPU_CLONES double sum_of_squares_f64(const double* x, int64_t n) {
  return sum_of_squares_loop(x, n);
}

// CPU: one pass in float64 (fp32 norms were off by ~1e-4, more than layouts may differ) over fixed
// blocks summed in order, so the result does not depend on the thread count. CUDA: torch's fused
// fp32 tree reduction per tensor (errors ~1e-7; float64 slices cost 16 ms a 1B-model step), squared
// and summed in float64.
double sum_of_squares(const std::vector<torch::Tensor>& grads) {
  if (grads.front().is_cuda()) {
    const auto norms = at::_foreach_norm(grads, 2, torch::kFloat32);
    return torch::stack(norms).to(torch::kFloat64).pow(2).sum().item<double>();  // one sync for all parameters
  }
  constexpr int64_t kBlock = 1 << 16;
  struct Block {
    const torch::Tensor* t;
    int64_t begin, n;
  };
  std::vector<torch::Tensor> flat;  // contiguous, in a dtype the kernel reads (fp16 widened exactly to fp32)
  for (const auto& g : grads) {
    const bool read =
        g.scalar_type() == torch::kFloat32 || g.scalar_type() == torch::kBFloat16 || g.scalar_type() == torch::kFloat64;
    flat.push_back((read ? g : g.to(torch::kFloat32)).contiguous());
  }
  std::vector<Block> blocks;
  for (const auto& t : flat)
    for (int64_t i = 0; i < t.numel(); i += kBlock) blocks.push_back({&t, i, std::min(kBlock, t.numel() - i)});
  std::vector<double> sums(blocks.size());
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const auto& b = blocks[static_cast<size_t>(k)];
      double& sum = sums[static_cast<size_t>(k)];
      switch (b.t->scalar_type()) {
        case torch::kFloat32:
          sum = sum_of_squares_f32(cpu::ptr<float>(*b.t, b.begin), b.n);
          break;
        case torch::kBFloat16:
          sum = sum_of_squares_bf16(cpu::ptr<uint16_t>(*b.t, b.begin), b.n);
          break;
        default:
          sum = sum_of_squares_f64(cpu::ptr<double>(*b.t, b.begin), b.n);
      }
    }
  });
  double total = 0;
  for (const double s : sums) total += s;
  return total;
}

}  // namespace

double grad_norm(const std::vector<torch::Tensor>& params, const std::vector<bool>& counted,
                 const std::function<double(double)>& sum_across) {
  TORCH_CHECK(counted.size() == params.size(), "grad_norm: one counted flag per parameter");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> summed;  // the gradients this rank counts
  for (size_t k = 0; k < params.size(); ++k)
    if (counted[k] && params[k].grad().defined()) summed.push_back(params[k].grad());
  double sq = summed.empty() ? 0.0 : sum_of_squares(summed);
  if (sum_across) sq = sum_across(sq);
  return std::sqrt(sq);
}

}  // namespace titan
