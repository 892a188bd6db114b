// The rotary embedding's one-pass CUDA kernel behind a plain C++ interface: the .cu includes no
// torch header, so nvcc compiles it in seconds; models/llama3/rope.cpp wraps it for tensors.
#pragma once

#include <cstdint>

#include "models/common/cuda_dtype.h"

namespace titan::llama3 {

// x, out: (B, T, H, 2 * half) contiguous, of `dtype`; cos, sin: (T, half) contiguous fp32. Rotates
// each pair (x[2k], x[2k+1]) by its position's angle (minus it when `inverse`) in fp32 (fp64 for
// fp64), on `stream` (a cudaStream_t). Returns nullptr, or the CUDA error's text.
const char* rope_cuda(CudaDtype dtype, const void* x, void* out, const float* cos, const float* sin, int64_t B,
                      int64_t T, int64_t H, int64_t half, bool inverse, void* stream);

}  // namespace titan::llama3
