#include "models/common/rms_norm.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "models/common/cpu_kernel.h"

namespace titan {
namespace {

// y = x r w with r = (mean(x^2) + eps)^-1/2 per row, so with gw = g w:
//   dx = r (gw - x r^2 mean(gw x)),   dw = sum over rows of g x r.
// Rows in parallel, each read twice while in cache, in fp32 (fp64 for fp64) and rounded once. dw
// (per-thread sums, then added up) accumulates in float64: an fp32 running sum over 1024 rows was 7x
// less accurate than libtorch's cascaded reduction (bench/kernel_bench.sh).
template <typename T, typename A>
TITAN_ALWAYS_INLINE void forward_rows(const T* x, const T* w, T* y, A* r, int64_t rows, int64_t D, A eps) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* xi = x + i * D;
    const A ss = cpu::sum16<A>(D, [&](int64_t j) {
      const A v = cpu::load(xi[j]);
      return v * v;
    });
    const A ri = A(1) / std::sqrt(ss / static_cast<A>(D) + eps);
    r[i] = ri;
    for (int64_t j = 0; j < D; ++j) cpu::store(static_cast<A>(cpu::load(xi[j]) * ri) * cpu::load(w[j]), y + i * D + j);
  }
}

template <typename T, typename A>
TITAN_ALWAYS_INLINE void backward_rows(const T* g, const T* x, const T* w, const A* r, T* dx, double* dw, int64_t rows,
                                       int64_t D) {
  for (int64_t i = 0; i < rows; ++i) {
    const T* xi = x + i * D;
    const T* gi = g + i * D;
    const A ri = r[i];
    const A dot = cpu::sum16<A>(D, [&](int64_t j) { return A(cpu::load(gi[j])) * cpu::load(w[j]) * cpu::load(xi[j]); });
    const A c = ri * ri * dot / static_cast<A>(D);
    for (int64_t j = 0; j < D; ++j) {
      const A xj = cpu::load(xi[j]), gj = cpu::load(gi[j]);
      cpu::store(ri * (gj * cpu::load(w[j]) - xj * c), dx + i * D + j);
      dw[j] += static_cast<double>(gj * xj * ri);
    }
  }
}

TITAN_CPU_CLONES void forward_f32(const float* x, const float* w, float* y, float* r, int64_t rows, int64_t D,
                                  float eps) {
  forward_rows(x, w, y, r, rows, D, eps);
}
TITAN_CPU_CLONES void forward_bf16(const uint16_t* x, const uint16_t* w, uint16_t* y, float* r, int64_t rows, int64_t D,
                                   float eps) {
  forward_rows(x, w, y, r, rows, D, eps);
}
TITAN_CPU_CLONES void forward_f64(const double* x, const double* w, double* y, double* r, int64_t rows, int64_t D,
                                  double eps) {
  forward_rows(x, w, y, r, rows, D, eps);
}
TITAN_CPU_CLONES void backward_f32(const float* g, const float* x, const float* w, const float* r, float* dx,
                                   double* dw, int64_t rows, int64_t D) {
  backward_rows(g, x, w, r, dx, dw, rows, D);
}
TITAN_CPU_CLONES void backward_bf16(const uint16_t* g, const uint16_t* x, const uint16_t* w, const float* r,
                                    uint16_t* dx, double* dw, int64_t rows, int64_t D) {
  backward_rows(g, x, w, r, dx, dw, rows, D);
}
TITAN_CPU_CLONES void backward_f64(const double* g, const double* x, const double* w, const double* r, double* dx,
                                   double* dw, int64_t rows, int64_t D) {
  backward_rows(g, x, w, r, dx, dw, rows, D);
}

// x, weight contiguous, fp32/bf16/fp64. Returns y (x's shape and dtype) and r (rows), fp32 (fp64 for fp64).
std::pair<torch::Tensor, torch::Tensor> forward_cpu(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  auto y = torch::empty_like(x);
  auto r =
      torch::empty({rows}, x.options().dtype(x.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32));
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin, at = begin * D;
    switch (x.scalar_type()) {
      case torch::kFloat32:
        forward_f32(cpu::ptr<float>(x, at), cpu::ptr<float>(weight), cpu::mutable_ptr<float>(y, at),
                    cpu::mutable_ptr<float>(r, begin), n, D, static_cast<float>(eps));
        break;
      case torch::kBFloat16:
        forward_bf16(cpu::ptr<uint16_t>(x, at), cpu::ptr<uint16_t>(weight), cpu::mutable_ptr<uint16_t>(y, at),
                     cpu::mutable_ptr<float>(r, begin), n, D, static_cast<float>(eps));
        break;
      default:
        forward_f64(cpu::ptr<double>(x, at), cpu::ptr<double>(weight), cpu::mutable_ptr<double>(y, at),
                    cpu::mutable_ptr<double>(r, begin), n, D, eps);
    }
  });
  return {y, r};
}

std::pair<torch::Tensor, torch::Tensor> backward_cpu(const torch::Tensor& grad, const torch::Tensor& x,
                                                     const torch::Tensor& weight, const torch::Tensor& r) {
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const auto g = grad.contiguous();
  auto dx = torch::empty_like(x);
  auto partial = torch::zeros({at::get_num_threads(), D}, torch::kFloat64);  // (threads, D): per-thread dw sums
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin, at = begin * D;
    double* dw = cpu::mutable_ptr<double>(partial, at::get_thread_num() * D);
    switch (x.scalar_type()) {
      case torch::kFloat32:
        backward_f32(cpu::ptr<float>(g, at), cpu::ptr<float>(x, at), cpu::ptr<float>(weight), cpu::ptr<float>(r, begin),
                     cpu::mutable_ptr<float>(dx, at), dw, n, D);
        break;
      case torch::kBFloat16:
        backward_bf16(cpu::ptr<uint16_t>(g, at), cpu::ptr<uint16_t>(x, at), cpu::ptr<uint16_t>(weight),
                      cpu::ptr<float>(r, begin), cpu::mutable_ptr<uint16_t>(dx, at), dw, n, D);
        break;
      default:
        backward_f64(cpu::ptr<double>(g, at), cpu::ptr<double>(x, at), cpu::ptr<double>(weight),
                     cpu::ptr<double>(r, begin), cpu::mutable_ptr<double>(dx, at), dw, n, D);
    }
  });
  return {dx, partial.sum(0).to(weight.scalar_type())};
}

// Keeps x, weight and r.
struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, double eps) {
    const auto xc = x.contiguous(), wc = weight.contiguous();
    auto [y, r] = forward_cpu(xc, wc, eps);
    ctx->save_for_backward({xc, wc, r});
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
  const auto dtype = x.scalar_type();
  const bool ours = x.is_cpu() && weight.scalar_type() == dtype &&
                    (dtype == torch::kFloat32 || dtype == torch::kBFloat16 || dtype == torch::kFloat64);
  if (ours) return RmsNormFunction::apply(x, weight, eps);
  return at::rms_norm(x, {weight.size(0)}, weight, eps);  // (..., D); CUDA has its own fused backward
}

}  // namespace titan
