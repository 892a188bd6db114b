#include "models/common/cross_entropy_cuda.h"

#include <cfloat>

#include "models/common/cuda_kernel.cuh"

namespace titan {
namespace {

// A running (max, sum of exp(x - max)) pair: two of them merge exactly as one pass over both would.
template <typename A>
struct MaxSum {
  A m, s;
  __device__ void add(A x) {
    if (x > m) {
      s = s * acc_exp(m - x) + A(1);
      m = x;
    } else {
      s += acc_exp(x - m);
    }
  }
  __device__ void merge(A m2, A s2) {
    const A top = m > m2 ? m : m2;
    s = s * acc_exp(m - top) + s2 * acc_exp(m2 - top);
    m = top;
  }
};

constexpr int kMaxWarps = 32;

template <typename T>
__global__ void __launch_bounds__(1024) rows_kernel(T* __restrict__ logits, const int64_t* __restrict__ labels, float* __restrict__ loss,
                            int64_t V, int64_t ignore_index, bool grad) {
  using acc_t = typename Acc<T>::type;
  T* row = logits + static_cast<int64_t>(blockIdx.x) * V;
  const int64_t label = labels[blockIdx.x];
  const bool ignored = label == ignore_index;
  // The type's lowest finite value, not -inf: idle threads and -inf logits then never compute -inf - -inf.
  MaxSum<acc_t> part{sizeof(acc_t) == 8 ? acc_t(-DBL_MAX) : acc_t(-FLT_MAX), acc_t(0)};
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) part.add(static_cast<acc_t>(row[j]));
  for (int offset = 16; offset > 0; offset /= 2)
    part.merge(__shfl_down_sync(0xffffffffu, part.m, offset), __shfl_down_sync(0xffffffffu, part.s, offset));
  __shared__ acc_t warp_m[kMaxWarps], warp_s[kMaxWarps];
  __shared__ acc_t row_lse;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_m[warp] = part.m, warp_s[warp] = part.s;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum<acc_t> all{warp_m[0], warp_s[0]};
    for (int w = 1; w < warps; ++w) all.merge(warp_m[w], warp_s[w]);
    row_lse = all.m + acc_log(all.s);
    loss[blockIdx.x] = ignored ? 0.f : static_cast<float>(row_lse - static_cast<acc_t>(row[label]));
  }
  __syncthreads();  // row[label] is read before any thread overwrites the row
  if (!grad) return;
  const acc_t lse = row_lse;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    const acc_t p = acc_exp(static_cast<acc_t>(row[j]) - lse);
    row[j] = static_cast<T>(ignored ? acc_t(0) : j == label ? p - acc_t(1) : p);
  }
}

}  // namespace

const char* cross_entropy_rows_cuda(CudaDtype dtype, void* logits, const int64_t* labels, float* loss, int64_t rows,
                                    int64_t V, int64_t ignore_index, bool grad, void* stream) {
  if (rows == 0) return nullptr;
  if (rows > 0x7fffffff) return "cross_entropy_rows_cuda: more than 2^31 - 1 rows";
  const int threads = V >= 8192 ? 1024 : 256;  // whole warps, at most kMaxWarps of them
  return cuda_dispatch(dtype, [&](auto element) {
    using T = decltype(element);
    rows_kernel<T><<<static_cast<unsigned>(rows), threads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<T*>(logits), labels, loss, V, ignore_index, grad);
    return last_cuda_error();
  });
}

}  // namespace titan
