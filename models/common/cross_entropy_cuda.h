// The cross-entropy of rows of logits as one CUDA kernel behind a plain C++ interface
// (models/common/cross_entropy.cpp wraps it for linear_cross_entropy_sum's chunks).
#pragma once

#include <cstdint>

#include "models/common/cuda_dtype.h"

namespace titan {

// logits: (rows, V) contiguous of `dtype`; labels: (rows) int64, each in [0, V) or ignore_index.
// loss[i] = lse_i - x[i][label_i] in fp32 (0 where ignored), lse computed in fp32 (fp64 for fp64)
// from one read of the row. With `grad` the row is then overwritten by softmax - onehot(label), the
// gradient of the summed loss (0 where ignored), rounded once. One block per row, on `stream` (a
// cudaStream_t). Returns nullptr, or the CUDA error's text.
const char* cross_entropy_rows_cuda(CudaDtype dtype, void* logits, const int64_t* labels, float* loss, int64_t rows,
                                    int64_t V, int64_t ignore_index, bool grad, void* stream);

}  // namespace titan
