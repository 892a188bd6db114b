// What our .cu kernels share (the CUDA counterpart of cpu_kernel.h): the dispatch from a CudaDtype
// to its element type, the type each computes in (Acc: fp32 for bf16, fp16 and fp32; fp64 for fp64)
// with its exp and log, and a launch's error as text. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "models/common/cuda_dtype.h"

namespace titan {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ inline float acc_exp(float x) { return expf(x); }
__device__ inline double acc_exp(double x) { return ::exp(x); }
__device__ inline float acc_log(float x) { return logf(x); }
__device__ inline double acc_log(double x) { return ::log(x); }

// Calls f(T{}) for the element type T that `dtype` names; returns what f returns.
template <typename F>
const char* cuda_dispatch(CudaDtype dtype, F&& f) {
  switch (dtype) {
    case CudaDtype::kFloat32: return f(float{});
    case CudaDtype::kFloat64: return f(double{});
    case CudaDtype::kBFloat16: return f(__nv_bfloat16{});
    case CudaDtype::kHalf: return f(__half{});
  }
  return "unknown dtype";
}

// Blocks for n elements at `threads` each, capped at 65535 * 16: the kernels loop grid-stride beyond.
inline unsigned grid_blocks(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

// After a launch: nullptr, or the CUDA error's text.
inline const char* last_cuda_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace titan
