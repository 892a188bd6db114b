#include "models/common/feed_forward.h"

#include "models/common/matmul.h"
#include "models/common/swiglu.h"

namespace titan {

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t hidden_dim, const torch::TensorOptions& options) {
  w1 = register_module("w1", Linear(dim, hidden_dim, options));
  w2 = register_module("w2", Linear(hidden_dim, dim, options));
  w3 = register_module("w3", Linear(dim, hidden_dim, options));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return apply_linear(swiglu(apply_linear(x, w1->weight), apply_linear(x, w3->weight)), w2->weight);  // (..., hidden) inside
}

}  // namespace titan
