// The one place that knows Hugging Face's Llama layout: key names, the RoPE row permutation of
// q/k (HF rotates half-split pairs, we rotate interleaved pairs) and config.json.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "models/llama3/model_args.h"

namespace titan::hf {

// "model.layers.3.self_attn.q_proj.weight" -> "layers.3.attention.wq.weight"; nullopt for keys
// we ignore (rotary_emb.inv_freq). Throws std::runtime_error for keys that are not Llama's.
std::optional<std::string> to_native_key(const std::string& hf_key);
std::string to_hf_key(const std::string& native_key);

// Rows of wq (n_heads) or wk (n_kv_heads): native row 2i+j of a head <-> HF row j*head_dim/2+i.
torch::Tensor permute_to_hf(const torch::Tensor& w, int64_t n_heads);
torch::Tensor permute_from_hf(const torch::Tensor& w, int64_t n_heads);
// The head count to permute a native key with (n_heads for wq, n_kv_heads for wk), or nullopt.
std::optional<int64_t> permute_heads(const std::string& native_key, const llama3::ModelArgs& args);

// Model arguments from config.json (any Llama-architecture size). Throws naming the field.
llama3::ModelArgs model_args_from_config(const std::string& config_path);
llama3::ModelArgs model_args_from_json(const nlohmann::json& config, const std::string& where);
// config.json for `args`, as Hugging Face's LlamaConfig writes it.
nlohmann::json config_from_model_args(const llama3::ModelArgs& args, torch::ScalarType dtype);
// Throws std::runtime_error naming the first field of config.json that disagrees with `args`.
void check_config_matches(const std::string& config_path, const llama3::ModelArgs& args);

}  // namespace titan::hf
