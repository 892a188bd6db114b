#include "models/llama3/model.h"

#include <cmath>

#include "models/common/causal_attention.h"
#include "models/common/matmul.h"
#include "models/llama3/activation_checkpoint.h"
#include "models/llama3/rope.h"

namespace titan::llama3 {

void trunc_normal_(torch::Tensor t, double mean, double std, double a, double b) {
  torch::NoGradGuard no_grad;
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = norm_cdf((a - mean) / std), u = norm_cdf((b - mean) / std);
  auto tmp = t.to(torch::kFloat32);
  tmp.uniform_(2 * l - 1, 2 * u - 1);
  tmp.erfinv_();
  tmp.mul_(std * std::sqrt(2.0));
  tmp.add_(mean);
  tmp.clamp_(a, b);
  t.copy_(tmp);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return at::rms_norm(x, {weight.size(0)}, weight, eps_);  // (..., dim), as torch.nn.RMSNorm: fp32 inside
}

void RMSNormImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.fill_(1.0);
}

AttentionImpl::AttentionImpl(const ModelArgs& args) : head_dim_(args.head_dim()) {
  const int64_t q_out = args.n_heads * head_dim_, kv_out = args.kv_heads() * head_dim_;
  wq = register_module("wq", torch::nn::Linear(torch::nn::LinearOptions(args.dim, q_out).bias(false)));
  wk = register_module("wk", torch::nn::Linear(torch::nn::LinearOptions(args.dim, kv_out).bias(false)));
  wv = register_module("wv", torch::nn::Linear(torch::nn::LinearOptions(args.dim, kv_out).bias(false)));
  wo = register_module("wo", torch::nn::Linear(torch::nn::LinearOptions(q_out, args.dim).bias(false)));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), hd = head_dim_;
  // -1 infers the local head count, so a tensor-parallel shard of wq/wk/wv works unchanged.
  auto xq = apply_rope(apply_linear(x, wq->weight).view({B, T, -1, hd}), cos, sin);  // (B, T, H, hd)
  auto xk = apply_rope(apply_linear(x, wk->weight).view({B, T, -1, hd}), cos, sin);  // (B, T, KV, hd)
  auto xv = apply_linear(x, wv->weight).view({B, T, -1, hd});         // (B, T, KV, hd)
  auto out = causal_attention(xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2));  // (B, H, T, hd)
  out = out.transpose(1, 2).reshape({B, T, -1});                                            // (B, T, H*hd)
  return apply_linear(out, wo->weight);  // (B, T, dim)
}

void AttentionImpl::init_weights(double init_std) {
  for (auto& proj : {wq, wk, wv}) trunc_normal_(proj->weight, 0.0, 0.02, -2.0, 2.0);
  trunc_normal_(wo->weight, 0.0, init_std, -2.0, 2.0);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t hidden_dim) {
  w1 = register_module("w1", torch::nn::Linear(torch::nn::LinearOptions(dim, hidden_dim).bias(false)));
  w2 = register_module("w2", torch::nn::Linear(torch::nn::LinearOptions(hidden_dim, dim).bias(false)));
  w3 = register_module("w3", torch::nn::Linear(torch::nn::LinearOptions(dim, hidden_dim).bias(false)));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return apply_linear(torch::silu(apply_linear(x, w1->weight)) * apply_linear(x, w3->weight), w2->weight);  // (B, T, hidden) inside
}

void FeedForwardImpl::init_weights(double init_std) {
  trunc_normal_(w1->weight, 0.0, 0.02, -2.0, 2.0);
  for (auto& proj : {w2, w3}) trunc_normal_(proj->weight, 0.0, init_std, -2.0, 2.0);
}

TransformerBlockImpl::TransformerBlockImpl(int64_t layer_id, const ModelArgs& args) {
  attention = register_module("attention", Attention(args));
  feed_forward = register_module("feed_forward", FeedForward(args.dim, args.ffn_hidden_dim()));
  attention_norm = register_module("attention_norm", RMSNorm(args.dim, args.norm_eps));
  ffn_norm = register_module("ffn_norm", RMSNorm(args.dim, args.norm_eps));
  const double depth = args.depth_init ? 2.0 * static_cast<double>(layer_id + 1) : 2.0 * static_cast<double>(args.n_layers);
  weight_init_std_ = 0.02 / std::sqrt(depth);
}

torch::Tensor TransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  if (checkpoint_activations && torch::GradMode::is_enabled()) return checkpointed_block_forward(this, x, cos, sin);
  return forward_uncheckpointed(x, cos, sin);
}

torch::Tensor TransformerBlockImpl::forward_uncheckpointed(const torch::Tensor& x, const torch::Tensor& cos,
                                                           const torch::Tensor& sin) {
  auto in = [this](const torch::Tensor& t) { return tp ? tp->sublayer_input(t) : t; };    // (B, T, dim)
  auto out = [this](const torch::Tensor& t) { return tp ? tp->sublayer_output(t) : t; };  // (B, T', dim)
  auto h = x + out(attention(in(attention_norm(x)), cos, sin));                            // (B, T', dim)
  return h + out(feed_forward(in(ffn_norm(h))));
}

void TransformerBlockImpl::init_weights() {
  attention_norm->reset_parameters();
  ffn_norm->reset_parameters();
  attention->init_weights(weight_init_std_);
  feed_forward->init_weights(weight_init_std_);
}

TransformerImpl::TransformerImpl(const ModelArgs& args) : args_(args) {
  args_.validate();
  tok_embeddings = register_module("tok_embeddings", torch::nn::Embedding(args.vocab_size, args.dim));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < args.n_layers; ++i) layers->push_back(TransformerBlock(i, args));
  norm = register_module("norm", RMSNorm(args.dim, args.norm_eps));
  if (!args.tie_word_embeddings)
    output = register_module("output", torch::nn::Linear(torch::nn::LinearOptions(args.dim, args.vocab_size).bias(false)));
  auto [cos, sin] = rope_tables(args_);
  rope_cos_ = register_buffer("rope_cos", cos);
  rope_sin_ = register_buffer("rope_sin", sin);
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& tokens) {
  TORCH_CHECK(tokens.size(1) <= args_.max_seq_len, "sequence length ", tokens.size(1), " exceeds max_seq_len ",
              args_.max_seq_len);
  auto unit = [this](int64_t i, auto&& body) {
    if (!hooks) return body();
    hooks->pre_forward(i);
    return hooks->post_forward(i, body());
  };
  auto h = unit(0, [&] { return tp ? tp->embed(tokens, tok_embeddings->weight) : tok_embeddings(tokens); });  // (B, T', dim)
  for (int64_t i = 0; i < args_.n_layers; ++i)
    h = unit(i + 1, [&] { return layers->at<TransformerBlockImpl>(static_cast<size_t>(i)).forward(h, rope_cos_, rope_sin_); });
  return unit(args_.n_layers + 1, [&] {
    auto normed = norm(h);
    const auto& weight = output ? output->weight : tok_embeddings->weight;
    return tp ? tp->project(normed, weight) : apply_linear(normed, weight);  // (B, T, vocab)
  });
}

void TransformerImpl::init_weights() {
  torch::NoGradGuard no_grad;
  tok_embeddings->weight.normal_(0.0, 1.0);
  for (const auto& layer : *layers) layer->as<TransformerBlockImpl>()->init_weights();
  norm->reset_parameters();
  const double final_out_std = 1.0 / std::sqrt(static_cast<double>(args_.dim));
  if (output) trunc_normal_(output->weight, 0.0, final_out_std, -3 * final_out_std, 3 * final_out_std);
}

int64_t TransformerImpl::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace titan::llama3
