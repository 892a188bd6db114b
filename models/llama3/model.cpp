#include "models/llama3/model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "models/common/causal_attention.h"
#include "models/common/cross_entropy.h"
#include "models/common/matmul.h"
#include "models/common/parameter_seed.h"
#include "models/llama3/activation_checkpoint.h"
#include "models/llama3/rope.h"

namespace titan::llama3 {

void trunc_normal_(torch::Tensor t, double mean, double std, double a, double b, at::Generator generator) {
  torch::NoGradGuard no_grad;
  auto norm_cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = norm_cdf((a - mean) / std), u = norm_cdf((b - mean) / std);
  auto values = torch::empty(t.sizes(), torch::kFloat32);
  values.uniform_(2 * l - 1, 2 * u - 1, generator);
  auto flat = values.view({-1});
  constexpr int64_t kChunk = int64_t{1} << 20;  // float64 temporaries of 8 MB, whatever the parameter's size
  for (int64_t begin = 0; begin < flat.numel(); begin += kChunk) {
    auto chunk = flat.narrow(0, begin, std::min(kChunk, flat.numel() - begin));
    chunk.copy_(chunk.to(torch::kFloat64).erfinv_().mul_(std * std::sqrt(2.0)).add_(mean).clamp_(a, b));
  }
  t.copy_(values);
}

AttentionImpl::AttentionImpl(const ModelArgs& args, const torch::TensorOptions& options) : head_dim_(args.head_dim()) {
  const int64_t q_out = args.n_heads * head_dim_, kv_out = args.kv_heads() * head_dim_;
  wq = register_module("wq", Linear(args.dim, q_out, options));
  wk = register_module("wk", Linear(args.dim, kv_out, options));
  wv = register_module("wv", Linear(args.dim, kv_out, options));
  wo = register_module("wo", Linear(q_out, args.dim, options));
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), hd = head_dim_;
  // -1 infers the local head count, so a tensor-parallel shard of wq/wk/wv works unchanged.
  auto xq = apply_rope(apply_linear(x, wq->weight).view({B, T, -1, hd}), cos, sin);  // (B, T, H, hd)
  auto xk = apply_rope(apply_linear(x, wk->weight).view({B, T, -1, hd}), cos, sin);  // (B, T, KV, hd)
  auto xv = apply_linear(x, wv->weight).view({B, T, -1, hd});         // (B, T, KV, hd)
  auto q = xq.transpose(1, 2), k = xk.transpose(1, 2), v = xv.transpose(1, 2);
  auto out = cp ? cp->attention(q, k, v) : causal_attention(q, k, v);  // (B, H, T, hd)
  out = out.transpose(1, 2).reshape({B, T, -1});                                            // (B, T, H*hd)
  return apply_linear(out, wo->weight);  // (B, T, dim)
}

TransformerBlockImpl::TransformerBlockImpl(const ModelArgs& args, int64_t layer, const torch::TensorOptions& options) {
  attention = register_module("attention", Attention(args, options));
  if (args.moe_layer(layer))
    moe = register_module("moe", MoE(args.dim, args.moe_hidden_dim(), *args.moe, options));
  else
    feed_forward = register_module("feed_forward", FeedForward(args.dim, args.ffn_hidden_dim(), options));
  attention_norm = register_module("attention_norm", RMSNorm(args.dim, args.norm_eps, options));
  ffn_norm = register_module("ffn_norm", RMSNorm(args.dim, args.norm_eps, options));
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
  const auto y = in(ffn_norm(h));  // (B, T, dim)
  return h + out(moe ? moe(y) : feed_forward(y));
}

TransformerImpl::TransformerImpl(const ModelArgs& args, const torch::TensorOptions& param_options,
                                 const std::vector<std::string>& modules)
    : args_(args) {
  args_.validate();
  std::vector<std::string> all = {"tok_embeddings"};
  for (int64_t i = 0; i < args.n_layers; ++i) all.push_back("layers." + std::to_string(i));
  all.push_back("norm");
  if (!args.tie_word_embeddings) all.push_back("output");
  for (const auto& m : modules)
    if (std::find(all.begin(), all.end(), m) == all.end())
      throw std::invalid_argument("llama3: '" + m + "' is not a module of the model (valid: tok_embeddings, layers.0 .. layers." +
                                  std::to_string(args.n_layers - 1) + ", norm" + (args.tie_word_embeddings ? "" : ", output") + ")");
  auto holds = [&](const std::string& m) {
    return modules.empty() || std::find(modules.begin(), modules.end(), m) != modules.end();
  };
  if (holds("tok_embeddings"))
    tok_embeddings = register_module("tok_embeddings", Embedding(args.vocab_size, args.dim, param_options));
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> blocks;
  for (int64_t i = 0; i < args.n_layers; ++i)
    if (holds("layers." + std::to_string(i))) blocks.emplace_back(std::to_string(i), TransformerBlock(args, i, param_options).ptr());
  layers = register_module("layers", torch::nn::ModuleDict(blocks));
  if (holds("norm")) norm = register_module("norm", RMSNorm(args.dim, args.norm_eps, param_options));
  if (!args.tie_word_embeddings && holds("output"))
    output = register_module("output", Linear(args.dim, args.vocab_size, param_options));
  auto [cos, sin] = rope_tables(args_);
  rope_cos_ = register_buffer("rope_cos", cos);
  rope_sin_ = register_buffer("rope_sin", sin);
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& input, const torch::Tensor& labels) {
  TORCH_CHECK(input.size(1) <= args_.max_seq_len, "sequence length ", input.size(1), " exceeds max_seq_len ",
              args_.max_seq_len);
  auto unit = [this](int64_t i, auto&& body) {
    if (!hooks) return body();
    hooks->pre_forward(i);
    return hooks->post_forward(i, body());
  };
  // RoPE rows of this rank's positions: (T, head_dim/2), or (T/cp, head_dim/2) under context parallel
  const auto cos = cp ? cp->position_rows(rope_cos_) : rope_cos_, sin = cp ? cp->position_rows(rope_sin_) : rope_sin_;
  auto h = input;  // (B, T', dim) between the parts
  if (tok_embeddings)
    h = unit(0, [&] { return tp ? tp->embed(input, tok_embeddings->weight) : tok_embeddings(input); });  // (B, T', dim)
  for (const auto& item : layers->items()) {
    auto& block = *item.second->as<TransformerBlockImpl>();
    h = unit(std::stoll(item.first) + 1, [&] { return block.forward(h, cos, sin); });
  }
  // With tied embeddings only the whole model projects (pipeline stages refuse tying).
  const bool projects = output || (args_.tie_word_embeddings && tok_embeddings && norm);
  if (!norm && !projects) return h;
  return unit(args_.n_layers + 1, [&] {
    auto normed = norm ? norm(h) : h;
    if (!projects) return normed;
    const auto& weight = output ? output->weight : tok_embeddings->weight;
    if (labels.defined())
      return tp ? tp->loss_sum(normed, weight, labels)
                : linear_cross_entropy_sum(normed.flatten(0, 1), weight, labels.reshape({-1}));  // fp32 scalar
    return tp ? tp->project(normed, weight) : apply_linear(normed, weight);  // (B, T, vocab)
  });
}

void TransformerImpl::init_weight(const std::string& fqn, torch::Tensor& t, at::Generator generator) const {
  torch::NoGradGuard no_grad;
  auto ends_with = [&](const char* tail) {
    const std::string s(tail);
    return fqn.size() >= s.size() && fqn.compare(fqn.size() - s.size(), s.size(), s) == 0;
  };
  if (fqn == "tok_embeddings.weight") {
    t.normal_(0.0, 1.0, generator);
  } else if (ends_with("norm.weight")) {
    t.fill_(1.0);
  } else if (fqn == "output.weight") {
    const double std = 1.0 / std::sqrt(static_cast<double>(args_.dim));
    trunc_normal_(t, 0.0, std, -3 * std, 3 * std, generator);
  } else if (fqn.rfind("layers.", 0) == 0) {
    // wq/wk/wv/w1: std 0.02; wo/w2/w3 and the router's gate: 0.02 / sqrt(2 (layer + 1)) with
    // depth_init, else / sqrt(2 n_layers).
    const int64_t layer = std::stoll(fqn.substr(7));
    const double depth = 2.0 * static_cast<double>(args_.depth_init ? layer + 1 : args_.n_layers);
    const bool scaled = ends_with("attention.wo.weight") || ends_with("w2.weight") || ends_with("w3.weight") ||
                        ends_with("experts.w2") || ends_with("experts.w3") || ends_with("router.gate.weight");
    trunc_normal_(t, 0.0, scaled ? 0.02 / std::sqrt(depth) : 0.02, -2.0, 2.0, generator);
  } else {
    throw std::invalid_argument("llama3: no initialisation for parameter " + fqn);
  }
}

void TransformerImpl::init_weights(uint64_t seed) {
  for (auto& p : named_parameters()) init_weight(p.key(), p.value(), at::make_generator<at::CPUGeneratorImpl>(parameter_seed(seed, p.key())));
}

std::vector<MoE> TransformerImpl::moe_layers() const {
  std::vector<MoE> out;
  for (const auto& layer : layers->values())
    if (auto moe = layer->as<TransformerBlockImpl>()->moe) out.push_back(moe);
  return out;
}

int64_t TransformerImpl::num_params() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace titan::llama3
