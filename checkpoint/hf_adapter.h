// The one place that knows Hugging Face's Llama 3 and Llama 4 layouts: key names, the q/k RoPE row
// permutation (Llama 3's HF files rotate half-split pairs, we interleaved ones), fused experts, config.json.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"
#include "models/llama3/model_args.h"

namespace titan::hf {

// HF name -> the native names it holds: "model.layers.3.self_attn.q_proj.weight" ->
// {"layers.3.attention.wq.weight"}; Llama 4's experts.gate_up_proj -> {experts.w1, experts.w3}; {}
// for keys we ignore (rotary_emb.inv_freq, Llama 4's vision tower). Throws for keys that are not the model's.
std::vector<std::string> to_native_keys(const std::string& hf_key, const llama3::ModelArgs& args);
// nullopt for state HF does not hold (Llama 4's moe.expert_bias).
std::optional<std::string> to_hf_key(const std::string& native_key, const llama3::ModelArgs& args);

// One HF tensor as native tensors: q/k rows un-permuted (Llama 3), Llama 4's experts transposed to
// (E, out, in) and gate_up_proj (E, dim, 2 hidden) split into w1 and w3.
std::vector<std::pair<std::string, torch::Tensor>> from_hf(const std::string& hf_key, const torch::Tensor& w,
                                                           const llama3::ModelArgs& args);
// Whole native tensors as HF tensors, in the given order (w1 and w3 fused where w1 is).
std::vector<std::pair<std::string, torch::Tensor>> to_hf(const std::vector<std::pair<std::string, torch::Tensor>>& native,
                                                         const llama3::ModelArgs& args);

// Rows of wq (n_heads) or wk (n_kv_heads): native row 2i+j of a head <-> HF row j*head_dim/2+i
// (Llama 3 rotates half-split pairs; Llama 4 rotates interleaved pairs as we do).
torch::Tensor permute_to_hf(const torch::Tensor& w, int64_t n_heads);
torch::Tensor permute_from_hf(const torch::Tensor& w, int64_t n_heads);
// The head count to permute a native key with (n_heads for wq, n_kv_heads for wk), or nullopt.
std::optional<int64_t> permute_heads(const std::string& native_key, const llama3::ModelArgs& args);

// Model arguments from config.json (any Llama-architecture size). Throws naming the field.
llama3::ModelArgs model_args_from_config(const std::string& config_path);
llama3::ModelArgs model_args_from_json(const nlohmann::json& config, const std::string& where);
// config.json for `args`, as transformers' LlamaConfig or Llama4TextConfig writes it.
nlohmann::json config_from_model_args(const llama3::ModelArgs& args, torch::ScalarType dtype);
// Throws std::runtime_error naming the first field of config.json that disagrees with `args`
// (any sequence length and dtype match), with the `remedy` the caller knows.
void check_config_matches(const nlohmann::json& config, const std::string& where, const llama3::ModelArgs& args,
                          const std::string& remedy);
void check_config_matches(const std::string& config_path, const llama3::ModelArgs& args);

}  // namespace titan::hf
