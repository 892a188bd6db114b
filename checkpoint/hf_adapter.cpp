#include "checkpoint/hf_adapter.h"

#include <fstream>
#include <regex>
#include <stdexcept>

namespace titan::hf {
namespace {

using Err = std::runtime_error;

// Per-layer names: HF suffix <-> native suffix.
const std::vector<std::pair<std::string, std::string>>& layer_map() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"self_attn.q_proj.weight", "attention.wq.weight"},
      {"self_attn.k_proj.weight", "attention.wk.weight"},
      {"self_attn.v_proj.weight", "attention.wv.weight"},
      {"self_attn.o_proj.weight", "attention.wo.weight"},
      {"mlp.gate_proj.weight", "feed_forward.w1.weight"},
      {"mlp.up_proj.weight", "feed_forward.w3.weight"},
      {"mlp.down_proj.weight", "feed_forward.w2.weight"},
      {"input_layernorm.weight", "attention_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
  };
  return m;
}

const std::vector<std::pair<std::string, std::string>>& top_map() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"model.embed_tokens.weight", "tok_embeddings.weight"},
      {"model.norm.weight", "norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  return m;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Err("cannot read " + path);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Err(path + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace

std::optional<std::string> to_native_key(const std::string& hf_key) {
  for (const auto& [hf, native] : top_map())
    if (hf_key == hf) return native;
  static const std::regex layer("model\\.layers\\.(\\d+)\\.(.+)");
  std::smatch m;
  if (std::regex_match(hf_key, m, layer)) {
    if (m[2] == "self_attn.rotary_emb.inv_freq") return std::nullopt;
    for (const auto& [hf, native] : layer_map())
      if (m[2] == hf) return "layers." + m[1].str() + "." + native;
  }
  throw Err("'" + hf_key + "' is not a Llama weight name");
}

std::string to_hf_key(const std::string& native_key) {
  for (const auto& [hf, native] : top_map())
    if (native_key == native) return hf;
  static const std::regex layer("layers\\.(\\d+)\\.(.+)");
  std::smatch m;
  if (std::regex_match(native_key, m, layer))
    for (const auto& [hf, native] : layer_map())
      if (m[2] == native) return "model.layers." + m[1].str() + "." + hf;
  throw Err("'" + native_key + "' has no Hugging Face name");
}

torch::Tensor permute_to_hf(const torch::Tensor& w, int64_t n_heads) {
  const int64_t rows = w.size(0), dim = w.size(1), half = rows / n_heads / 2;
  return w.view({n_heads, half, 2, dim}).transpose(1, 2).reshape({rows, dim});  // (H*hd, dim)
}

torch::Tensor permute_from_hf(const torch::Tensor& w, int64_t n_heads) {
  const int64_t rows = w.size(0), dim = w.size(1), half = rows / n_heads / 2;
  return w.view({n_heads, 2, half, dim}).transpose(1, 2).reshape({rows, dim});  // (H*hd, dim)
}

std::optional<int64_t> permute_heads(const std::string& native_key, const llama3::ModelArgs& args) {
  auto ends_with = [&](const std::string& s) {
    return native_key.size() >= s.size() && native_key.compare(native_key.size() - s.size(), s.size(), s) == 0;
  };
  if (ends_with("attention.wq.weight")) return args.n_heads;
  if (ends_with("attention.wk.weight")) return args.kv_heads();
  return std::nullopt;
}

llama3::ModelArgs model_args_from_config(const std::string& config_path) {
  return model_args_from_json(read_json(config_path), config_path);
}

llama3::ModelArgs model_args_from_json(const nlohmann::json& c, const std::string& config_path) {
  auto need = [&](const char* key) -> const nlohmann::json& {
    if (!c.contains(key) || c[key].is_null()) throw Err(config_path + ": missing '" + key + "'");
    return c[key];
  };
  try {
    llama3::ModelArgs a;
    a.dim = need("hidden_size").get<int64_t>();
    a.n_layers = need("num_hidden_layers").get<int64_t>();
    a.n_heads = need("num_attention_heads").get<int64_t>();
    a.n_kv_heads = c.value("num_key_value_heads", a.n_heads);
    a.intermediate_size = need("intermediate_size").get<int64_t>();
    a.vocab_size = need("vocab_size").get<int64_t>();
    a.rope_theta = c.value("rope_theta", 10000.0);
    a.norm_eps = c.value("rms_norm_eps", 1e-6);
    a.tie_word_embeddings = c.value("tie_word_embeddings", false);
    a.max_seq_len = c.value("max_position_embeddings", int64_t{131072});
    if (c.contains("head_dim") && !c["head_dim"].is_null() && c["head_dim"].get<int64_t>() != a.dim / a.n_heads)
      throw Err(config_path + ": head_dim " + std::to_string(c["head_dim"].get<int64_t>()) +
                " != hidden_size / num_attention_heads is not supported");
    a.rope_scaling = std::nullopt;
    // transformers 5 writes rope_parameters (theta inside, "default" = unscaled); 4.x rope_scaling.
    const bool v5 = c.contains("rope_parameters") && !c["rope_parameters"].is_null();
    const std::string rope_key = v5 ? "rope_parameters" : "rope_scaling";
    const nlohmann::json rope = c.contains(rope_key) ? c[rope_key] : nlohmann::json();
    if (!rope.is_null()) {
      a.rope_theta = rope.value("rope_theta", a.rope_theta);
      const std::string type = rope.value("rope_type", rope.value("type", ""));
      if (type == "llama3") {
        llama3::RopeScaling s;
        s.factor = rope.at("factor").get<double>();
        s.low_freq_factor = rope.at("low_freq_factor").get<double>();
        s.high_freq_factor = rope.at("high_freq_factor").get<double>();
        s.original_max_position_embeddings = rope.at("original_max_position_embeddings").get<int64_t>();
        a.rope_scaling = s;
      } else if (!(v5 && type == "default")) {
        throw Err(config_path + ": " + rope_key + " type '" + type + "' is not supported (valid: llama3" +
                  (v5 ? ", default)" : ")"));
      }
    }
    a.validate();
    return a;
  } catch (const nlohmann::json::exception& e) {
    throw Err(config_path + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    throw Err(config_path + ": " + e.what());
  }
}

nlohmann::json config_from_model_args(const llama3::ModelArgs& a, torch::ScalarType dtype) {
  nlohmann::json c = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", a.dim},
                      {"num_hidden_layers", a.n_layers},
                      {"num_attention_heads", a.n_heads},
                      {"num_key_value_heads", a.kv_heads()},
                      {"head_dim", a.head_dim()},
                      {"intermediate_size", a.ffn_hidden_dim()},
                      {"vocab_size", a.vocab_size},
                      {"rope_theta", a.rope_theta},
                      {"rms_norm_eps", a.norm_eps},
                      {"max_position_embeddings", a.max_seq_len},
                      {"tie_word_embeddings", a.tie_word_embeddings},
                      {"hidden_act", "silu"},
                      {"attention_bias", false},
                      {"mlp_bias", false},
                      {"torch_dtype", dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32"}};
  if (a.rope_scaling)
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", a.rope_scaling->factor},
                         {"low_freq_factor", a.rope_scaling->low_freq_factor},
                         {"high_freq_factor", a.rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", a.rope_scaling->original_max_position_embeddings}};
  else
    c["rope_scaling"] = nullptr;
  return c;
}

void check_config_matches(const std::string& config_path, const llama3::ModelArgs& args) {
  const auto hf = model_args_from_config(config_path);
  auto check = [&](const char* field, double theirs, double ours) {
    if (theirs != ours)
      throw Err(config_path + ": " + field + " = " + std::to_string(theirs) + " but model.flavor has " + std::to_string(ours) +
                " (use --model.flavor from_hf to build the model from config.json)");
  };
  check("hidden_size", hf.dim, args.dim);
  check("num_hidden_layers", hf.n_layers, args.n_layers);
  check("num_attention_heads", hf.n_heads, args.n_heads);
  check("num_key_value_heads", hf.kv_heads(), args.kv_heads());
  check("intermediate_size", hf.ffn_hidden_dim(), args.ffn_hidden_dim());
  check("vocab_size", hf.vocab_size, args.vocab_size);
  check("rope_theta", hf.rope_theta, args.rope_theta);
  check("tie_word_embeddings", hf.tie_word_embeddings, args.tie_word_embeddings);
  check("rope_scaling (present)", hf.rope_scaling.has_value(), args.rope_scaling.has_value());
}

}  // namespace titan::hf
