// SwiGLU's gate as CUDA kernels behind a plain C++ interface (models/common/swiglu.cpp wraps them).
#pragma once

#include <cstdint>

#include "models/common/cuda_dtype.h"

namespace titan {

// n contiguous elements of `dtype` each, on `stream` (a cudaStream_t); computed in fp32 (fp64 for
// fp64) and rounded once. Forward: out = silu(a) b. Backward of it for the output gradient g:
// da = g b s (1 + a (1 - s)), db = g a s, s = sigmoid(a). Return nullptr, or the CUDA error's text.
const char* swiglu_forward_cuda(CudaDtype dtype, const void* a, const void* b, void* out, int64_t n, void* stream);
const char* swiglu_backward_cuda(CudaDtype dtype, const void* g, const void* a, const void* b, void* da, void* db,
                                 int64_t n, void* stream);

}  // namespace titan
