// Layers whose parameters (`weight`, or named members) are made uninitialised on the given options: on the meta
// device nothing is allocated until a rank makes its own piece (replace_weight), and the model's
// init by parameter name fills it (libtorch's layers would allocate and initialise the whole weight
// at construction). Forward reads the members, which FSDP may point at gathered copies.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"

namespace titan {

class WeightModule : public torch::nn::Module {
 public:
  // Makes `value` the registered parameter `name` and the member forward reads: a meta placeholder
  // cannot become a real tensor in place (set_data refuses a change of device type).
  void replace_weight(const std::string& name, torch::Tensor value);
  // The members forward reads, by parameter name: FSDP points them at gathered copies.
  const std::vector<std::pair<std::string, torch::Tensor*>>& weight_slots() const { return slots_; }

 protected:
  WeightModule() = default;
  // Registers the parameter `name` of `shape` and makes `member` the tensor forward reads for it.
  void add_weight(const std::string& name, torch::Tensor& member, const std::vector<int64_t>& shape,
                  const torch::TensorOptions& options);

 private:
  std::vector<std::pair<std::string, torch::Tensor*>> slots_;
};

// A layer of one parameter, `weight`.
class SingleWeightModule : public WeightModule {
 public:
  torch::Tensor weight;

 protected:
  SingleWeightModule(const std::vector<int64_t>& shape, const torch::TensorOptions& options) {
    add_weight("weight", weight, shape, options);
  }
};

class LinearImpl : public SingleWeightModule {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& options);  // weight (out, in)
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public SingleWeightModule {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options);  // weight (num_embeddings, dim)
  torch::Tensor forward(const torch::Tensor& tokens);                                       // (B, T) int64 -> (B, T, dim)
};
TORCH_MODULE(Embedding);

// RMSNorm as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32, cast back to the input dtype.
class RMSNormImpl : public SingleWeightModule {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);  // weight (dim,)
  torch::Tensor forward(const torch::Tensor& x);                              // (..., dim) -> (..., dim)

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace titan
