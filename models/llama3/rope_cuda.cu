#include "models/llama3/rope_cuda.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace titan::llama3 {
namespace {

template <typename T> struct Acc { using type = float; };  // bf16, fp16 and fp32 rotate in fp32
template <> struct Acc<double> { using type = double; };

// One thread per pair, both elements in one load. Built with --fmad=false: products and sums round
// as the CPU kernel's do, so the two devices give the same bits.
template <typename T>
__global__ void rope_kernel(const T* __restrict__ x, T* __restrict__ out, const float* __restrict__ cos,
                            const float* __restrict__ sin, int64_t pairs, int64_t T_len, int64_t heads_x_half,
                            int64_t half, float sign) {
  using acc_t = typename Acc<T>::type;
  struct alignas(2 * sizeof(T)) Pair { T a, b; };
  const Pair* in = reinterpret_cast<const Pair*>(x);
  Pair* o = reinterpret_cast<Pair*>(out);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t angle = ((i / heads_x_half) % T_len) * half + i % half;  // (t, k) of pair i
    const acc_t c = cos[angle], s = sign * sin[angle];
    const Pair p = in[i];
    const acc_t x0 = static_cast<acc_t>(p.a), x1 = static_cast<acc_t>(p.b);
    o[i] = Pair{static_cast<T>(x0 * c - x1 * s), static_cast<T>(x0 * s + x1 * c)};
  }
}

template <typename T>
const char* launch(const void* x, void* out, const float* cos, const float* sin, int64_t B, int64_t T_len, int64_t H,
                   int64_t half, bool inverse, cudaStream_t stream) {
  const int64_t pairs = B * T_len * H * half;
  if (pairs == 0) return nullptr;
  constexpr int kThreads = 256;
  const int64_t blocks = (pairs + kThreads - 1) / kThreads;
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);  // grid-stride beyond
  rope_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out), cos, sin, pairs, T_len,
                                                H * half, half, inverse ? -1.0f : 1.0f);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace

const char* rope_cuda(RopeCudaDtype dtype, const void* x, void* out, const float* cos, const float* sin, int64_t B,
                      int64_t T, int64_t H, int64_t half, bool inverse, void* stream) {
  const auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case RopeCudaDtype::kFloat32: return launch<float>(x, out, cos, sin, B, T, H, half, inverse, s);
    case RopeCudaDtype::kFloat64: return launch<double>(x, out, cos, sin, B, T, H, half, inverse, s);
    case RopeCudaDtype::kBFloat16: return launch<__nv_bfloat16>(x, out, cos, sin, B, T, H, half, inverse, s);
    case RopeCudaDtype::kHalf: return launch<__half>(x, out, cos, sin, B, T, H, half, inverse, s);
  }
  return "rope_cuda: unknown dtype";
}

}  // namespace titan::llama3
