#include "models/llama3/rope_cuda.h"

#include "models/common/cuda_kernel.cuh"

namespace titan::llama3 {
namespace {

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
  rope_kernel<T><<<grid_blocks(pairs, kThreads), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out), cos, sin, pairs, T_len,
                                                H * half, half, inverse ? -1.0f : 1.0f);
  return last_cuda_error();
}

}  // namespace

const char* rope_cuda(CudaDtype dtype, const void* x, void* out, const float* cos, const float* sin, int64_t B, int64_t T,
                      int64_t H, int64_t half, bool inverse, void* stream) {
  return cuda_dispatch(dtype, [&](auto element) {
    return launch<decltype(element)>(x, out, cos, sin, B, T, H, half, inverse, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace titan::llama3
