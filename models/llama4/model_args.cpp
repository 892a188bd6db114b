#include "models/llama4/model_args.h"

#include <map>
#include <stdexcept>

namespace titan::llama4 {
namespace {

llama3::ModelArgs llama4_args(int64_t dim, int64_t n_layers, int64_t n_heads, std::optional<int64_t> n_kv_heads,
                              std::optional<double> ffn_dim_multiplier, int64_t multiple_of, int64_t num_experts,
                              int64_t interleave_moe_layer_step, bool rope_scaling) {
  llama3::ModelArgs a;
  a.dim = dim, a.n_layers = n_layers, a.n_heads = n_heads, a.n_kv_heads = n_kv_heads, a.vocab_size = 202048;
  a.ffn_dim_multiplier = ffn_dim_multiplier, a.multiple_of = multiple_of, a.rope_theta = 500000;
  a.rope_scaling = rope_scaling ? std::optional<llama3::RopeScaling>(llama3::RopeScaling{16.0, 1.0, 1.0, 8192}) : std::nullopt;
  a.moe = MoEArgs{};
  a.moe->num_experts = num_experts;
  a.interleave_moe_layer_step = interleave_moe_layer_step;
  return a;
}

const std::map<std::string, llama3::ModelArgs>& flavors() {
  static const std::map<std::string, llama3::ModelArgs> table = [] {
    std::map<std::string, llama3::ModelArgs> t;
    t["debugmodel"] = llama4_args(256, 6, 16, std::nullopt, std::nullopt, 256, 8, 2, true);
    t["debugmodel"].vocab_size = 2048;
    t["17bx16e"] = llama4_args(5120, 48, 40, 8, 1.2, 2048, 16, 1, true);
    t["17bx128e"] = llama4_args(5120, 48, 40, 8, 1.2, 2048, 128, 2, false);
    return t;
  }();
  return table;
}

}  // namespace

llama3::ModelArgs flavor_args(const std::string& flavor) {
  auto it = flavors().find(flavor);
  if (it != flavors().end()) return it->second;
  std::string valid;
  for (const auto& name : flavor_names()) valid += (valid.empty() ? "" : ", ") + name;
  if (flavor.size() > 6 && flavor.compare(flavor.size() - 6, 6, "_irope") == 0)
    throw std::invalid_argument("model.flavor '" + flavor + "' (iRoPE: NoPE layers and FlexAttention's chunked block-causal "
                                "masks) is not supported yet; valid flavors: " + valid);
  throw std::invalid_argument("model.flavor '" + flavor + "' is not a llama4 flavor; valid flavors: " + valid);
}

std::vector<std::string> flavor_names() { return {"debugmodel", "17bx16e", "17bx128e"}; }

}  // namespace titan::llama4
