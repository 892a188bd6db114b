// SwiGLU feed-forward, the dense FFN of Llama blocks and the shared expert of MoE layers.
#pragma once

#include "models/common/layers.h"
#include "models/common/torch_api.h"

namespace titan {

// w2(silu(w1 x) * w3 x)
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t hidden_dim, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim) -> (..., dim)
  Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace titan
