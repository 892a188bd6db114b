// Llama 3 as plain libtorch modules. Parameter names are TorchTitan's FQNs, e.g.
// layers.0.attention.wq.weight; nothing here knows about ranks or devices.
#pragma once

#include <torch/torch.h>

#include "models/common/parallel_plan.h"
#include "models/llama3/model_args.h"

namespace titan::llama3 {

// RMSNorm as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32, cast back to the input dtype.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);  // (..., dim) -> (..., dim)
  void reset_parameters();
  torch::Tensor weight;  // (dim,)

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// Causal grouped-query attention; q head h reads kv head h / (n_heads / n_kv_heads).
class AttentionImpl : public torch::nn::Module {
 public:
  explicit AttentionImpl(const ModelArgs& args);
  // x: (B, T, dim); cos/sin: (>=T, head_dim/2) -> (B, T, dim)
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  void init_weights(double init_std);
  torch::nn::Linear wq{nullptr}, wk{nullptr}, wv{nullptr}, wo{nullptr};

 private:
  int64_t head_dim_;
};
TORCH_MODULE(Attention);

// SwiGLU: w2(silu(w1 x) * w3 x).
class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(int64_t dim, int64_t hidden_dim);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, dim) -> (B, T, dim)
  void init_weights(double init_std);
  torch::nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};
TORCH_MODULE(FeedForward);

class TransformerBlockImpl : public torch::nn::Module {
 public:
  TransformerBlockImpl(int64_t layer_id, const ModelArgs& args);
  // h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h)). Checkpointed when
  // checkpoint_activations is set and gradients are being recorded. x: (B, T, dim), or (B, T/tp,
  // dim) under sequence parallel.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  torch::Tensor forward_uncheckpointed(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
  void init_weights();
  bool checkpoint_activations = false;
  TensorParallelHooks* tp = nullptr;  // around both sublayers; not owned
  Attention attention{nullptr};
  FeedForward feed_forward{nullptr};
  RMSNorm attention_norm{nullptr}, ffn_norm{nullptr};

 private:
  double weight_init_std_;
};
TORCH_MODULE(TransformerBlock);

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const ModelArgs& args);
  torch::Tensor forward(const torch::Tensor& tokens);  // (B, T) int64 -> logits (B, T, vocab)
  // TorchTitan's init: embedding N(0,1), truncated normals for projections, depth-scaled wo/w2/w3.
  void init_weights();
  const ModelArgs& args() const { return args_; }
  int64_t num_params() const;  // every parameter, embedding included

  // Called around unit 0 (tok_embeddings), units 1..n_layers (layers.0..) and unit n_layers + 1
  // (norm + output): the FSDP units of parallelize.h. Not owned.
  ForwardHooks* hooks = nullptr;
  TensorParallelHooks* tp = nullptr;  // the embedding and the output projection; not owned

  torch::nn::Embedding tok_embeddings{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm norm{nullptr};
  torch::nn::Linear output{nullptr};  // absent (nullptr) with tie_word_embeddings

 private:
  ModelArgs args_;
  torch::Tensor rope_cos_, rope_sin_;  // (max_seq_len, head_dim/2) fp32 buffers, never checkpointed
};
TORCH_MODULE(Transformer);

// Fills `t` from N(mean, std) truncated to [a, b] exactly as torch.nn.init.trunc_normal_
// (inverse-CDF sampling), in fp32, then casts back.
void trunc_normal_(torch::Tensor t, double mean, double std, double a, double b);

}  // namespace titan::llama3
