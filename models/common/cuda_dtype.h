// The element types of our CUDA kernels, named without torch headers: the .cu files include none
// (nvcc compiles them in seconds); the .cpp wrappers map a tensor's dtype with cuda_launch.h.
#pragma once

namespace titan {

enum class CudaDtype { kFloat32, kFloat64, kBFloat16, kHalf };

}  // namespace titan
