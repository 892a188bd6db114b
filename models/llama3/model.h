// Llama 3 as plain libtorch modules. Parameter names are TorchTitan's FQNs, e.g.
// layers.0.attention.wq.weight; nothing here knows about ranks. Parameters are made uninitialised
// on `param_options` (the meta device: nothing allocated) and init_weight fills one by its name.
#pragma once

#include <string>
#include <vector>

#include "models/common/feed_forward.h"
#include "models/common/layers.h"
#include "models/common/parallel_plan.h"
#include "models/common/torch_api.h"
#include "models/llama3/model_args.h"
#include "models/moe/moe.h"

namespace titan::llama3 {

// Causal grouped-query attention; q head h reads kv head h / (n_heads / n_kv_heads).
class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelArgs& args, const torch::TensorOptions& options);
  // x: (B, T, dim); cos/sin: (>=T, head_dim/2) -> (B, T, dim)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};
  ContextParallelHooks* cp = nullptr;  // the attention core over the whole sequence; not owned

 private:
  int64_t head_dim_;
};
TORCH_MODULE(Attention);

class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(const ModelArgs& args, int64_t layer, const torch::TensorOptions& options);
  // h = x + attention(attention_norm(x)); out = h + ffn(ffn_norm(h)), ffn being feed_forward or
  // moe. Checkpointed when
  // checkpoint_activations is set and gradients are being recorded. x: (B, T, dim), or (B, T/tp,
  // dim) under sequence parallel.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  torch::Tensor forward_uncheckpointed(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  bool checkpoint_activations = false;
  TensorParallelHooks* tp = nullptr;  // around both sublayers; not owned
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};  // absent in an MoE layer
  MoE moe{nullptr};                   // present in an MoE layer
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};
};
TORCH_MODULE(TransformerBlock);

// The whole model, or one pipeline stage's part of it: `modules` names the TorchTitan modules the
// part holds ("tok_embeddings", "layers.3", "norm", "output"; empty: all of them), and parameter
// names stay the whole model's (layers.3 is layers.3 in any stage), so checkpoints know no stages.
class TransformerImpl : public torch::nn::Module {
 public:
  // The RoPE tables are real (fp32, CPU) whatever `param_options` says. Throws
  // std::invalid_argument for a module name the model does not have.
  explicit TransformerImpl(const ModelArgs& args, const torch::TensorOptions& param_options = {},
                           const std::vector<std::string>& modules = {});
  // input: tokens (B, T) int64 if the part holds the embedding, else hidden states (B, T', dim);
  // returns logits (B, T, vocab) if it holds the output projection, else hidden states (B, T', dim).
  // Given labels (B, T), a part holding the projection returns instead the summed cross-entropy (a
  // fp32 scalar, ignore_index -100), projected chunk by chunk: the logits never exist whole.
  torch::Tensor forward(const torch::Tensor& input, const torch::Tensor& labels = {});
  // TorchTitan's init of the parameter `fqn` into `t` (its full shape): embedding N(0, 1),
  // truncated normals for projections, depth-scaled wo/w2/w3 (and the MoE router's gate), ones for
  // norms; from `generator`.
  void init_weight(const std::string& fqn, torch::Tensor& t, at::Generator generator) const;
  // Every parameter in place, each from its own generator seeded by parameter_seed(seed, FQN).
  void init_weights(uint64_t seed);
  const ModelArgs& args() const { return args_; }
  int64_t num_params() const;  // every parameter of the part, embedding included
  std::vector<MoE> moe_layers() const;  // the part's MoE layers, in layer order

  // Called around unit 0 (tok_embeddings), units 1..n_layers (layers.0..) and unit n_layers + 1
  // (norm + output): the FSDP units of parallelize.h. Not owned.
  ForwardHooks* hooks = nullptr;
  TensorParallelHooks* tp = nullptr;  // the embedding and the output projection; not owned
  ContextParallelHooks* cp = nullptr;  // this rank's positions' RoPE rows; not owned

  // Each absent (nullptr, or no entry in layers) where the part does not hold it; output is
  // absent with tie_word_embeddings too (the embedding projects).
  Embedding tok_embeddings{nullptr};
  torch::nn::ModuleDict layers;  // keyed by the layer's index in the whole model: "0", "1", ...
  RMSNorm norm{nullptr};
  Linear output{nullptr};

 private:
  ModelArgs args_;
  torch::Tensor rope_cos_, rope_sin_;  // (max_seq_len, head_dim/2) fp32 buffers, never checkpointed
};
TORCH_MODULE(Transformer);

// Fills `t` from N(mean, std) truncated to [a, b] by torch.nn.init.trunc_normal_'s inverse-CDF
// sampling of fp32 uniforms from `generator`, the inverse CDF in float64: libtorch's fp32 erfinv
// rounds differently on AVX2 and AVX-512, so fp32 would give other bits on other CPUs.
void trunc_normal_(torch::Tensor t, double mean, double std, double a, double b, at::Generator generator);

}  // namespace titan::llama3
