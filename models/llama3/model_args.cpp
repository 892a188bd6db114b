#include "models/llama3/model_args.h"

#include <map>
#include <stdexcept>

namespace titan::llama3 {
namespace {

ModelArgs llama3_args(int64_t dim, int64_t n_layers, int64_t n_heads, std::optional<int64_t> n_kv_heads,
                      int64_t vocab_size, std::optional<double> ffn_dim_multiplier, int64_t multiple_of) {
  ModelArgs a;
  a.dim = dim, a.n_layers = n_layers, a.n_heads = n_heads, a.n_kv_heads = n_kv_heads, a.vocab_size = vocab_size;
  a.ffn_dim_multiplier = ffn_dim_multiplier, a.multiple_of = multiple_of, a.rope_theta = 500000;
  return a;
}

// TorchTitan's llama3 flavors (torchtitan/models/llama3/__init__.py).
const std::map<std::string, ModelArgs>& flavors() {
  static const std::map<std::string, ModelArgs> table = {
      {"debugmodel", llama3_args(256, 6, 16, std::nullopt, 2048, std::nullopt, 256)},
      {"8B", llama3_args(4096, 32, 32, 8, 128256, 1.3, 1024)},
      {"70B", llama3_args(8192, 80, 64, 8, 128256, 1.3, 4096)},
      {"405B", llama3_args(16384, 126, 128, 8, 128256, 1.2, 4096)},
  };
  return table;
}

}  // namespace

int64_t ModelArgs::ffn_hidden_dim() const {
  if (intermediate_size) return *intermediate_size;
  int64_t hidden = static_cast<int64_t>(2.0 * (4 * dim) / 3.0);
  if (ffn_dim_multiplier) hidden = static_cast<int64_t>(*ffn_dim_multiplier * static_cast<double>(hidden));
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

int64_t ModelArgs::moe_hidden_dim() const {
  if (moe_intermediate_size) return *moe_intermediate_size;
  int64_t hidden = static_cast<int64_t>(2.0 * (4 * dim) / 3.0);
  if (ffn_dim_multiplier) hidden = static_cast<int64_t>(*ffn_dim_multiplier * static_cast<double>(hidden));
  if (auto_scale_hidden_dim) hidden /= moe->top_k + moe->num_shared_experts;
  return multiple_of * ((hidden + multiple_of - 1) / multiple_of);
}

void ModelArgs::validate() const {
  auto fail = [](const std::string& msg) { throw std::invalid_argument("model: " + msg); };
  if (dim <= 0 || n_layers <= 0 || n_heads <= 0 || vocab_size <= 0 || multiple_of <= 0)
    fail("dim, n_layers, n_heads, vocab_size and multiple_of must be positive");
  if (dim % n_heads != 0) fail("dim " + std::to_string(dim) + " is not divisible by n_heads " + std::to_string(n_heads));
  if (head_dim() % 2 != 0) fail("head_dim " + std::to_string(head_dim()) + " must be even for RoPE");
  if (kv_heads() <= 0 || n_heads % kv_heads() != 0)
    fail("n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " + std::to_string(kv_heads()));
  if (max_seq_len <= 0) fail("max_seq_len must be positive");
  if (moe) {
    moe->validate();
    if (interleave_moe_layer_step < 1) fail("interleave_moe_layer_step must be positive");
  }
}

ModelArgs flavor_args(const std::string& flavor) {
  auto it = flavors().find(flavor);
  if (it == flavors().end()) {
    std::string valid;
    for (const auto& name : flavor_names()) valid += (valid.empty() ? "" : ", ") + name;
    throw std::invalid_argument("model.flavor '" + flavor + "' is not a llama3 flavor; valid flavors: " + valid +
                                ", from_hf");
  }
  return it->second;
}

std::vector<std::string> flavor_names() { return {"debugmodel", "8B", "70B", "405B"}; }

}  // namespace titan::llama3
