#include "models/common/swiglu.h"

#include <ATen/Parallel.h>

#include "models/common/cpu_kernel.h"

#if TITAN_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "models/common/cuda_launch.h"
#include "models/common/swiglu_cuda.h"
#endif

namespace titan {
namespace {

// s = sigmoid(a): forward out = a s b; backward da = g b s (1 + a (1 - s)), db = g a s.
template <typename T>
TITAN_ALWAYS_INLINE void forward_loop(const T* a, const T* b, T* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float ai = cpu::load(a[i]), s = 1.f / (1.f + cpu::exp_f32(-ai));
    cpu::store(ai * s * cpu::load(b[i]), out + i);
  }
}
template <typename T>
TITAN_ALWAYS_INLINE void backward_loop(const T* g, const T* a, const T* b, T* da, T* db, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = cpu::load(g[i]), ai = cpu::load(a[i]), bi = cpu::load(b[i]), s = 1.f / (1.f + cpu::exp_f32(-ai));
    cpu::store(gi * bi * s * (1.f + ai * (1.f - s)), da + i);
    cpu::store(gi * ai * s, db + i);
  }
}

TITAN_CPU_CLONES void forward_f32(const float* a, const float* b, float* out, int64_t n) {
  forward_loop(a, b, out, n);
}
TITAN_CPU_CLONES void forward_bf16(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t n) {
  forward_loop(a, b, out, n);
}
TITAN_CPU_CLONES void backward_f32(const float* g, const float* a, const float* b, float* da, float* db, int64_t n) {
  backward_loop(g, a, b, da, db, n);
}
TITAN_CPU_CLONES void backward_bf16(const uint16_t* g, const uint16_t* a, const uint16_t* b, uint16_t* da, uint16_t* db,
                                    int64_t n) {
  backward_loop(g, a, b, da, db, n);
}

constexpr int64_t kGrain = 1 << 14;  // elements per task: a few L1-sized blocks

torch::Tensor forward_cpu(const torch::Tensor& a, const torch::Tensor& b) {
  auto out = torch::empty_like(a);
  at::parallel_for(0, a.numel(), kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    if (a.scalar_type() == torch::kFloat32)
      forward_f32(cpu::ptr<float>(a, begin), cpu::ptr<float>(b, begin), cpu::mutable_ptr<float>(out, begin), n);
    else
      forward_bf16(cpu::ptr<uint16_t>(a, begin), cpu::ptr<uint16_t>(b, begin), cpu::mutable_ptr<uint16_t>(out, begin),
                   n);
  });
  return out;
}

std::pair<torch::Tensor, torch::Tensor> backward_cpu(const torch::Tensor& g, const torch::Tensor& a,
                                                     const torch::Tensor& b) {
  auto da = torch::empty_like(a), db = torch::empty_like(b);
  at::parallel_for(0, a.numel(), kGrain, [&](int64_t begin, int64_t end) {
    const int64_t n = end - begin;
    if (a.scalar_type() == torch::kFloat32)
      backward_f32(cpu::ptr<float>(g, begin), cpu::ptr<float>(a, begin), cpu::ptr<float>(b, begin),
                   cpu::mutable_ptr<float>(da, begin), cpu::mutable_ptr<float>(db, begin), n);
    else
      backward_bf16(cpu::ptr<uint16_t>(g, begin), cpu::ptr<uint16_t>(a, begin), cpu::ptr<uint16_t>(b, begin),
                    cpu::mutable_ptr<uint16_t>(da, begin), cpu::mutable_ptr<uint16_t>(db, begin), n);
  });
  return {da, db};
}

#if TITAN_CUDA
torch::Tensor forward_cuda(const torch::Tensor& a, const torch::Tensor& b) {
  const c10::cuda::CUDAGuard guard(a.device());
  auto out = torch::empty_like(a);
  check_cuda(swiglu_forward_cuda(cuda_dtype(a, "swiglu"), a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(),
                                 cuda_stream(a)),
             "swiglu");
  return out;
}

std::pair<torch::Tensor, torch::Tensor> backward_cuda(const torch::Tensor& g, const torch::Tensor& a,
                                                      const torch::Tensor& b) {
  const c10::cuda::CUDAGuard guard(a.device());
  auto da = torch::empty_like(a), db = torch::empty_like(b);
  check_cuda(swiglu_backward_cuda(cuda_dtype(a, "swiglu"), g.data_ptr(), a.data_ptr(), b.data_ptr(), da.data_ptr(),
                                  db.data_ptr(), a.numel(), cuda_stream(a)),
             "swiglu");
  return {da, db};
}
#endif

struct SwigluFunction : torch::autograd::Function<SwigluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b) {
    const auto ac = a.contiguous(), bc = b.contiguous();
    ctx->save_for_backward({ac, bc});
#if TITAN_CUDA
    if (ac.is_cuda()) return forward_cuda(ac, bc);
#endif
    return forward_cpu(ac, bc);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto g = grad[0].contiguous();
#if TITAN_CUDA
    if (g.is_cuda()) {
      auto [da, db] = backward_cuda(g, saved[0], saved[1]);
      return {da, db};
    }
#endif
    auto [da, db] = backward_cpu(g, saved[0], saved[1]);
    return {da, db};
  }
};

}  // namespace

torch::Tensor swiglu(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.device() == b.device(), "swiglu: a ",
              a.sizes(), " ", a.scalar_type(), " on ", a.device(), " and b ", b.sizes(), " ", b.scalar_type(), " on ",
              b.device(), " differ");
  const bool cpu = a.is_cpu() && (a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kBFloat16);
  if (cpu || (TITAN_CUDA && a.is_cuda())) return SwigluFunction::apply(a, b);
  return torch::silu(a) * b;  // fp64 on the CPU (tests' references) and other devices
}

}  // namespace titan
