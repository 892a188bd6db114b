// What a .cpp wrapper needs to run one of our torch-free CUDA kernels on a tensor: its dtype as the
// kernels name it, its device's current stream, and the kernel's error text turned into one line.
#pragma once

#if TITAN_CUDA
#include <c10/cuda/CUDAStream.h>

#include "models/common/cuda_dtype.h"
#include "models/common/torch_api.h"

namespace titan {

// `op` names the caller in the error for a dtype the kernels lack.
inline CudaDtype cuda_dtype(const torch::Tensor& x, const char* op) {
  switch (x.scalar_type()) {
    case torch::kFloat32: return CudaDtype::kFloat32;
    case torch::kFloat64: return CudaDtype::kFloat64;
    case torch::kBFloat16: return CudaDtype::kBFloat16;
    case torch::kHalf: return CudaDtype::kHalf;
    default: TORCH_CHECK(false, op, " on CUDA: unsupported dtype ", x.scalar_type(), " (float32, float64, bfloat16, float16)");
  }
}

// As a cudaStream_t, which the kernels' headers take as void*.
inline void* cuda_stream(const torch::Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }

// err: nullptr or the CUDA error's text returned by a launch.
inline void check_cuda(const char* err, const char* op) { TORCH_CHECK(err == nullptr, op, " CUDA kernel: ", err); }

}  // namespace titan
#endif
