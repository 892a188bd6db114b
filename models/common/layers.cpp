#include "models/common/layers.h"

#include <stdexcept>

#include "models/common/rms_norm.h"

namespace titan {

void WeightModule::add_weight(const std::string& name, torch::Tensor& member, const std::vector<int64_t>& shape,
                              const torch::TensorOptions& options) {
  member = register_parameter(name, torch::empty(shape, options));
  slots_.emplace_back(name, &member);
}

void WeightModule::replace_weight(const std::string& name, torch::Tensor value) {
  for (auto& [slot_name, member] : slots_)
    if (slot_name == name) {
      value.set_requires_grad(true);
      parameters_[name] = value;
      *member = value;
      return;
    }
  throw std::logic_error("replace_weight: the layer has no weight " + name);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& options)
    : SingleWeightModule({out_features, in_features}, options) {}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options)
    : SingleWeightModule({num_embeddings, dim}, options) {}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& tokens) { return at::embedding(weight, tokens); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options)
    : SingleWeightModule({dim}, options), eps_(eps) {}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return rms_norm(x, weight, eps_);  // (..., dim), as torch.nn.RMSNorm: fp32 inside
}

}  // namespace titan
