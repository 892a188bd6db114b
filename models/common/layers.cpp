#include "models/common/layers.h"

namespace titan {

WeightModule::WeightModule(const std::vector<int64_t>& shape, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty(shape, options));
}

void WeightModule::replace_weight(torch::Tensor value) {
  value.set_requires_grad(true);
  parameters_["weight"] = value;
  weight = value;
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& options)
    : WeightModule({out_features, in_features}, options) {}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options)
    : WeightModule({num_embeddings, dim}, options) {}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& tokens) { return at::embedding(weight, tokens); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options)
    : WeightModule({dim}, options), eps_(eps) {}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return at::rms_norm(x, {weight.size(0)}, weight, eps_);  // (..., dim), as torch.nn.RMSNorm: fp32 inside
}

}  // namespace titan
