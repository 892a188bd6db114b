#include "models/common/matmul.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>

namespace titan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

std::atomic<LowPrecisionGemm> g_mode{LowPrecisionGemm::kFp32};

bool upcast(const torch::Tensor& a, const torch::Tensor& b) {
  const auto t = a.scalar_type();
  return g_mode.load() == LowPrecisionGemm::kFp32 && (t == torch::kBFloat16 || t == torch::kHalf) &&
         b.scalar_type() == t && a.device().is_cpu() && b.device().is_cpu();
}

torch::Tensor f32(const torch::Tensor& t) {
  return t.to(torch::kFloat32);
}

// Saves the low-precision operands (no fp32 copies kept for backward) and rounds every result once.
struct UpcastLinear : public torch::autograd::Function<UpcastLinear> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w) {
    ctx->save_for_backward({x, w});
    return torch::linear(f32(x), f32(w)).to(x.scalar_type());  // (..., out)
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& w = saved[1];
    const auto g = f32(grad_outputs[0]);  // (..., out)
    torch::Tensor gx, gw;
    if (ctx->needs_input_grad(0)) gx = torch::matmul(g, f32(w)).to(x.scalar_type());  // (..., in)
    if (ctx->needs_input_grad(1))
      gw = g.reshape({-1, g.size(-1)}).t().mm(f32(x.reshape({-1, x.size(-1)}))).to(w.scalar_type());  // (out, in)
    return {gx, gw};
  }
};

struct UpcastMatmul : public torch::autograd::Function<UpcastMatmul> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    ctx->save_for_backward({a, b});
    return torch::matmul(f32(a), f32(b)).to(a.scalar_type());  // (..., n, m)
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& a = saved[0];
    const auto& b = saved[1];
    const auto g = f32(grad_outputs[0]);  // (..., n, m)
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = torch::matmul(g, f32(b).transpose(-1, -2)).to(a.scalar_type());  // (..., n, k)
    if (ctx->needs_input_grad(1)) gb = torch::matmul(f32(a).transpose(-1, -2), g).to(b.scalar_type());  // (..., k, m)
    return {ga, gb};
  }
};

// Best FLOP/s of c = a @ b over a few repetitions, after one warm-up.
double time_gemm(const torch::Tensor& a, const torch::Tensor& b, const std::function<torch::Tensor()>& gemm) {
  gemm();
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    gemm().sum().item<double>();  // waits for the device
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(a.size(0) * a.size(1) * b.size(1)) / s);
  }
  return best;
}

}  // namespace

void set_low_precision_gemm(LowPrecisionGemm mode) {
  g_mode.store(mode);
}
LowPrecisionGemm low_precision_gemm() {
  return g_mode.load();
}

torch::Tensor apply_linear(const torch::Tensor& x, const torch::Tensor& w) {
  return upcast(x, w) ? UpcastLinear::apply(x, w) : torch::linear(x, w);
}

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.dim() == b.dim() && a.sizes().slice(0, a.dim() - 2) == b.sizes().slice(0, b.dim() - 2),
              "batched_matmul needs equal batch dims, got ", a.sizes(), " and ", b.sizes());
  return upcast(a, b) ? UpcastMatmul::apply(a, b) : torch::matmul(a, b);
}

std::string GemmProbe::describe(torch::ScalarType dtype) const {
  const std::string name = c10::toString(dtype);
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "%s matmuls run %s: fp32 accumulation %.3g FLOP/s, largest error %.3g; native %s kernel %.3g FLOP/s, "
                "largest error %.3g (512^3 GEMM against float64)",
                name.c_str(),
                choice == LowPrecisionGemm::kFp32 ? "as fp32 GEMMs on exactly-upcast operands" : "natively", fp32_flops,
                fp32_error, name.c_str(), native_flops, native_error);
  return buf;
}

GemmProbe probe_low_precision_gemm(torch::ScalarType dtype, const torch::Device& device) {
  GemmProbe probe;
  if ((dtype != torch::kBFloat16 && dtype != torch::kHalf) || !device.is_cpu()) return probe;
  torch::NoGradGuard no_grad;
  const int64_t n = 512;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  const auto a = torch::randn({n, n}, opts).to(dtype), b = torch::randn({n, n}, opts).to(dtype);
  const auto exact = torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64));  // (n, n)
  auto error = [&](const torch::Tensor& c) { return (c.to(torch::kFloat64) - exact).abs().max().item<double>(); };
  auto native = [&] { return torch::mm(a, b); };
  auto upcast_mm = [&] { return torch::mm(f32(a), f32(b)).to(dtype); };
  probe.native_flops = time_gemm(a, b, native);
  probe.fp32_flops = time_gemm(a, b, upcast_mm);
  probe.native_error = error(native());
  probe.fp32_error = error(upcast_mm());
  const bool native_accumulates_in_fp32 = probe.native_error <= 2.0 * probe.fp32_error;
  probe.choice = native_accumulates_in_fp32 && probe.native_flops >= probe.fp32_flops ? LowPrecisionGemm::kNative
                                                                                      : LowPrecisionGemm::kFp32;
  return probe;
}

}  // namespace titan
