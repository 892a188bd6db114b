#include "models/llama3/rope.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <cmath>

#if TITAN_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "models/common/cuda_launch.h"
#include "models/llama3/rope_cuda.h"
#endif

namespace titan::llama3 {
namespace {

// One pass over x on the CPU: each pair rotated by its position's angle (by minus it when
// `inverse`, the backward), in fp32 (x's own precision for fp64), stored in x's dtype into out.
void rotate_cpu(const torch::Tensor& x, const torch::Tensor& c, const torch::Tensor& s, torch::Tensor& out,
                bool inverse) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), half = x.size(3) / 2;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "rope", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = x.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const float* cp = c.data_ptr<float>();
    const float* sp = s.data_ptr<float>();
    const acc_t sign = inverse ? -1 : 1;
    at::parallel_for(0, B * T, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bt = begin; bt < end; ++bt) {
        const float* ct = cp + (bt % T) * half;
        const float* st = sp + (bt % T) * half;
        for (int64_t h = 0; h < H; ++h) {
          const scalar_t* xp = in + (bt * H + h) * 2 * half;  // (hd/2, 2): the head's pairs
          scalar_t* yp = o + (bt * H + h) * 2 * half;
          for (int64_t k = 0; k < half; ++k) {
            const acc_t x0 = xp[2 * k], x1 = xp[2 * k + 1], cs = ct[k], sn = sign * st[k];
            yp[2 * k] = static_cast<scalar_t>(x0 * cs - x1 * sn);
            yp[2 * k + 1] = static_cast<scalar_t>(x0 * sn + x1 * cs);
          }
        }
      }
    });
  });
}

#if TITAN_CUDA
// The same pass as one CUDA kernel (models/llama3/rope_cuda.cu) on x's device and current stream.
void rotate_cuda(torch::Tensor x, const torch::Tensor& c, const torch::Tensor& s, torch::Tensor& out, bool inverse) {
  const c10::cuda::CUDAGuard guard(x.device());
  if (reinterpret_cast<uintptr_t>(x.data_ptr()) % (2 * x.element_size()) != 0) x = x.clone();  // pairs load as one
  check_cuda(rope_cuda(cuda_dtype(x, "apply_rope"), x.data_ptr(), out.data_ptr(), c.data_ptr<float>(), s.data_ptr<float>(),
                       x.size(0), x.size(1), x.size(2), x.size(3) / 2, inverse, cuda_stream(x)),
             "apply_rope");
}
#endif

// x made contiguous, the first T angles as contiguous fp32 on x's device, then the device's pass.
torch::Tensor rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool inverse) {
  const int64_t T = x.size(1);
  const auto xc = x.contiguous();
  const auto c = cos.slice(0, 0, T).to(x.device(), torch::kFloat32).contiguous();  // (T, hd/2)
  const auto s = sin.slice(0, 0, T).to(x.device(), torch::kFloat32).contiguous();
  auto out = torch::empty_like(xc);
#if TITAN_CUDA
  if (x.is_cuda()) {
    rotate_cuda(xc, c, s, out, inverse);
    return out;
  }
#endif
  rotate_cpu(xc, c, s, out, inverse);
  return out;
}

// A rotation's gradient is the inverse rotation of the output's: only cos and sin are kept.
struct RopeFunction : torch::autograd::Function<RopeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    return rotate(x, cos, sin, false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    return {rotate(grad[0], saved[0], saved[1], true), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rope_inv_freq(int64_t head_dim, double theta, const std::optional<RopeScaling>& scaling) {
  auto fp32 = torch::TensorOptions().dtype(torch::kFloat32);
  // 1 / theta^(2i/d), computed in fp32 like TorchTitan's precompute_freqs_cis.
  auto exponent = torch::arange(0, head_dim, 2, torch::kInt64).slice(0, 0, head_dim / 2).to(torch::kFloat32) / head_dim;
  auto freqs = 1.0 / torch::pow(torch::scalar_tensor(theta, fp32), exponent);  // (head_dim/2,)
  if (!scaling) return freqs;
  const double orig = static_cast<double>(scaling->original_max_position_embeddings);
  auto wavelen = 2 * M_PI / freqs;
  const double high_freq_wavelen = orig / scaling->high_freq_factor;
  const double low_freq_wavelen = orig / scaling->low_freq_factor;
  // Long wavelengths are slowed by `factor`, short ones kept, the band in between interpolated.
  freqs = torch::where(wavelen > low_freq_wavelen, freqs / scaling->factor, freqs);
  // Llama 4 sets low = high: the band is empty and the interpolation below would divide by zero.
  if (scaling->high_freq_factor == scaling->low_freq_factor) return freqs;
  auto smooth = (orig / wavelen - scaling->low_freq_factor) / (scaling->high_freq_factor - scaling->low_freq_factor);
  auto smoothed = (1 - smooth) * freqs / scaling->factor + smooth * freqs;
  auto is_medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return torch::where(is_medium, smoothed, freqs);
}

std::pair<torch::Tensor, torch::Tensor> rope_tables(const ModelArgs& args) {
  auto inv_freq = rope_inv_freq(args.head_dim(), args.rope_theta, args.rope_scaling);  // (hd/2,)
  auto t = torch::arange(args.max_seq_len, torch::kInt64).to(torch::kFloat32);          // (T,)
  auto angles = torch::outer(t, inv_freq);                                              // (T, hd/2)
  return {angles.cos(), angles.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x.is_cpu() || (TITAN_CUDA && x.is_cuda()) ? RopeFunction::apply(x, cos, sin) : apply_rope_composite(x, cos, sin);
}

torch::Tensor apply_rope_composite(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), hd = x.size(3);
  auto pairs = x.to(torch::kFloat32).reshape({B, T, H, hd / 2, 2});
  auto x0 = pairs.select(-1, 0);  // (B, T, H, hd/2)
  auto x1 = pairs.select(-1, 1);
  auto c = cos.slice(0, 0, T).view({1, T, 1, hd / 2});
  auto s = sin.slice(0, 0, T).view({1, T, 1, hd / 2});
  // (x0 + i x1) * (c + i s)
  auto rotated = torch::stack({x0 * c - x1 * s, x0 * s + x1 * c}, -1);  // (B, T, H, hd/2, 2)
  return rotated.view({B, T, H, hd}).to(x.scalar_type());
}

}  // namespace titan::llama3
