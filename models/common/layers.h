// Layers that hold one parameter, `weight`, made uninitialised on the given options: on the meta
// device nothing is allocated until a rank makes its own piece (replace_weight), and the model's
// init by parameter name fills it (libtorch's layers would allocate and initialise the whole weight
// at construction). Forward reads the `weight` member, which FSDP may point at a gathered copy.
#pragma once

#include <torch/torch.h>

#include <vector>

namespace titan {

class WeightModule : public torch::nn::Module {
 public:
  // Makes `value` the registered parameter and the member forward reads: a meta placeholder cannot
  // become a real tensor in place (set_data refuses a change of device type).
  void replace_weight(torch::Tensor value);
  torch::Tensor weight;

 protected:
  WeightModule(const std::vector<int64_t>& shape, const torch::TensorOptions& options);
};

class LinearImpl : public WeightModule {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, const torch::TensorOptions& options);  // weight (out, in)
};
TORCH_MODULE(Linear);

class EmbeddingImpl : public WeightModule {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, const torch::TensorOptions& options);  // weight (num_embeddings, dim)
  torch::Tensor forward(const torch::Tensor& tokens);                                       // (B, T) int64 -> (B, T, dim)
};
TORCH_MODULE(Embedding);

// RMSNorm as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32, cast back to the input dtype.
class RMSNormImpl : public WeightModule {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);  // weight (dim,)
  torch::Tensor forward(const torch::Tensor& x);                              // (..., dim) -> (..., dim)

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace titan
