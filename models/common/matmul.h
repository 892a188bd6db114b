// Matrix products of the models. bf16/fp16 operands can run as fp32 GEMMs on exactly-upcast
// inputs with one rounding of the result: fp32 accumulation, as GPU tensor cores do it. Which is
// faster depends on the CPU (the native kernel wins 2x with AVX512-BF16; CPUs without bf16
// instructions ran it far slower, and libtorch 1.13's accumulated in bf16), so a probe decides.
#pragma once

#include <string>

#include "models/common/torch_api.h"

namespace titan {

enum class LowPrecisionGemm {
  kNative,  // libtorch's kernel for the operands' dtype
  kFp32,    // upcast exactly, fp32 GEMM, round the result once; gradients alike
};

// Process-wide choice for bf16/fp16 matmuls on the CPU (CUDA always runs natively).
void set_low_precision_gemm(LowPrecisionGemm mode);
LowPrecisionGemm low_precision_gemm();

// y = x @ w^T.  x (..., in), w (out, in) -> (..., out)
torch::Tensor apply_linear(const torch::Tensor& x, const torch::Tensor& w);

// c = a @ b with equal batch dims.  a (..., n, k), b (..., k, m) -> (..., n, m)
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b);

// What the start-up probe measured for one low-precision dtype on one device.
struct GemmProbe {
  LowPrecisionGemm choice = LowPrecisionGemm::kNative;
  double native_flops = 0, fp32_flops = 0;  // FLOP/s of a square GEMM each way
  double native_error = 0, fp32_error = 0;  // largest |error| against the float64 product
  std::string describe(torch::ScalarType dtype) const;
};

// Times both ways on the device and prefers fp32 accumulation unless the native kernel is as
// accurate (it accumulates in fp32 too) and faster. fp32/fp64 dtypes return kNative untouched.
GemmProbe probe_low_precision_gemm(torch::ScalarType dtype, const torch::Device& device);

}  // namespace titan
