#include "models/common/swiglu_cuda.h"

#include "models/common/cuda_kernel.cuh"

namespace titan {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void forward_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  using acc_t = typename Acc<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const acc_t ai = static_cast<acc_t>(a[i]), s = acc_t(1) / (acc_t(1) + acc_exp(-ai));
    out[i] = static_cast<T>(ai * s * static_cast<acc_t>(b[i]));
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                                T* __restrict__ da, T* __restrict__ db, int64_t n) {
  using acc_t = typename Acc<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const acc_t gi = static_cast<acc_t>(g[i]), ai = static_cast<acc_t>(a[i]), bi = static_cast<acc_t>(b[i]);
    const acc_t s = acc_t(1) / (acc_t(1) + acc_exp(-ai));
    da[i] = static_cast<T>(gi * bi * s * (acc_t(1) + ai * (acc_t(1) - s)));
    db[i] = static_cast<T>(gi * ai * s);
  }
}

}  // namespace

const char* swiglu_forward_cuda(CudaDtype dtype, const void* a, const void* b, void* out, int64_t n, void* stream) {
  if (n == 0) return nullptr;
  return cuda_dispatch(dtype, [&](auto element) {
    using T = decltype(element);
    forward_kernel<T><<<grid_blocks(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
    return last_cuda_error();
  });
}

const char* swiglu_backward_cuda(CudaDtype dtype, const void* g, const void* a, const void* b, void* da, void* db,
                                 int64_t n, void* stream) {
  if (n == 0) return nullptr;
  return cuda_dispatch(dtype, [&](auto element) {
    using T = decltype(element);
    backward_kernel<T><<<grid_blocks(n, kThreads), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(g), static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(da),
        static_cast<T*>(db), n);
    return last_cuda_error();
  });
}

}  // namespace titan
