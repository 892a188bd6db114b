#include "models/common/rms_norm.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

namespace titan {
namespace {

// y = x r w with r = (mean(x^2) + eps)^-1/2 per row, so with gw = g w:
//   dx = r (gw - x r^2 mean(gw x)),   dw = sum over rows of g x r.
// Rows in parallel, each read twice while in cache. dw (gathered per thread, then summed) accumulates
// in float64: an fp32 running sum over 1024 rows was 7x less accurate than libtorch's cascaded
// reduction (bench/kernel_bench.sh); the row's dot product over D stays in the op-math type.
std::pair<torch::Tensor, torch::Tensor> backward_cpu(const torch::Tensor& grad, const torch::Tensor& x,
                                                     const torch::Tensor& weight, const torch::Tensor& rstd) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const auto xc = x.contiguous(), gc = grad.contiguous(), wc = weight.contiguous();
  const auto r = rstd.to(at::toOpMathType(x.scalar_type())).contiguous();  // (rows)
  auto dx = torch::empty_like(xc);
  torch::Tensor partial;  // (threads, D): per-thread dw sums
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rms_norm_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const acc_t* rp = r.data_ptr<acc_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    partial = torch::zeros({at::get_num_threads(), D}, torch::kFloat64);
    double* part = partial.data_ptr<double>();
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      double* dw = part + at::get_thread_num() * D;
      for (int64_t i = begin; i < end; ++i) {
        const scalar_t* xi = xp + i * D;
        const scalar_t* gi = gp + i * D;
        const acc_t ri = rp[i];
        acc_t dot = 0;
        for (int64_t j = 0; j < D; ++j) dot += static_cast<acc_t>(gi[j]) * static_cast<acc_t>(wp[j]) * static_cast<acc_t>(xi[j]);
        const acc_t c = ri * ri * dot / static_cast<acc_t>(D);
        scalar_t* dxi = dxp + i * D;
        for (int64_t j = 0; j < D; ++j) {
          const acc_t xj = xi[j], gj = gi[j];
          dxi[j] = static_cast<scalar_t>(ri * (gj * static_cast<acc_t>(wp[j]) - xj * c));
          dw[j] += static_cast<double>(gj * xj * ri);
        }
      }
    });
  });
  return {dx.view(x.sizes()), partial.sum(0).to(weight.scalar_type())};
}

// The forward is libtorch's fused op (the same bits as at::rms_norm); it keeps x, weight and r.
struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               double eps) {
    auto [y, rstd] = at::_fused_rms_norm(x, {weight.size(0)}, weight, eps);
    ctx->save_for_backward({x, weight, rstd});
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    auto [dx, dw] = backward_cpu(grad[0], saved[0], saved[1], saved[2]);
    return {dx, dw, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (x.is_cpu()) return RmsNormFunction::apply(x, weight, eps);
  return at::rms_norm(x, {weight.size(0)}, weight, eps);  // (..., D); CUDA has its own fused backward
}

}  // namespace titan
