// Llama 3 hyper-parameters (with Llama 4's MoE layers) and TorchTitan's llama3 flavors (debugmodel, 8B,
// 70B, 405B).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "models/moe/moe_args.h"

namespace titan::llama3 {

struct RopeScaling {  // Llama 3.1 frequency scaling, applied once to the inverse frequencies
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelArgs {
  int64_t dim = 4096;
  int64_t n_layers = 32;
  int64_t n_heads = 32;
  std::optional<int64_t> n_kv_heads;  // None = n_heads (no GQA)
  int64_t vocab_size = 128256;
  int64_t multiple_of = 256;  // FFN hidden size is rounded up to a multiple of this
  std::optional<double> ffn_dim_multiplier;
  std::optional<int64_t> intermediate_size;  // explicit FFN hidden size (Hugging Face configs)
  double norm_eps = 1e-5;
  double rope_theta = 10000;
  std::optional<RopeScaling> rope_scaling = RopeScaling{};  // TorchTitan applies it to every flavor
  int64_t max_seq_len = 131072;  // RoPE table length; the trainer sets it to training.seq_len
  bool depth_init = true;        // output-projection init std shrinks with layer depth
  bool tie_word_embeddings = false;  // Llama 3.2 style: the output projection is tok_embeddings
  // Llama 4: the FFN of every interleave_moe_layer_step-th block (layers step-1, 2 step-1, ...) is
  // a mixture of experts whose hidden size is scaled down by top_k + shared experts.
  std::optional<MoEArgs> moe;
  int64_t interleave_moe_layer_step = 2;
  std::optional<int64_t> moe_intermediate_size;  // explicit expert hidden size (Hugging Face configs)
  bool auto_scale_hidden_dim = true;

  int64_t kv_heads() const { return n_kv_heads.value_or(n_heads); }
  int64_t head_dim() const { return dim / n_heads; }
  // intermediate_size if set, else int(2*4*dim/3), times the multiplier, rounded up to multiple_of
  int64_t ffn_hidden_dim() const;
  bool moe_layer(int64_t layer) const { return moe && (layer + 1) % interleave_moe_layer_step == 0; }
  // moe_intermediate_size if set, else int(2*4*dim/3), times the multiplier, / (top_k + shared) with
  // auto_scale, rounded up to multiple_of
  int64_t moe_hidden_dim() const;

  // Throws std::invalid_argument naming the inconsistent field.
  void validate() const;
};

// TorchTitan's llama3 flavors; throws std::invalid_argument listing the valid names.
ModelArgs flavor_args(const std::string& flavor);
std::vector<std::string> flavor_names();

}  // namespace titan::llama3
