#include "checkpoint/hf_adapter.h"

#include <map>
#include <regex>
#include <stdexcept>

#include "checkpoint/json_fields.h"

namespace titan::hf {
namespace {

using Err = std::runtime_error;

// Per-layer names: HF suffix <-> native suffix. Llama 4 (an MoE model) calls the FFN feed_forward.
using NameMap = std::vector<std::pair<std::string, std::string>>;
const NameMap& layer_map(const llama3::ModelArgs& args) {
  static const NameMap attention = {
      {"self_attn.q_proj.weight", "attention.wq.weight"},
      {"self_attn.k_proj.weight", "attention.wk.weight"},
      {"self_attn.v_proj.weight", "attention.wv.weight"},
      {"self_attn.o_proj.weight", "attention.wo.weight"},
      {"input_layernorm.weight", "attention_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
  };
  static const NameMap llama3 = [] {
    NameMap m = attention;
    m.insert(m.end(), {{"mlp.gate_proj.weight", "feed_forward.w1.weight"},
                       {"mlp.up_proj.weight", "feed_forward.w3.weight"},
                       {"mlp.down_proj.weight", "feed_forward.w2.weight"}});
    return m;
  }();
  static const NameMap llama4 = [] {
    NameMap m = attention;
    m.insert(m.end(), {{"feed_forward.gate_proj.weight", "feed_forward.w1.weight"},
                       {"feed_forward.up_proj.weight", "feed_forward.w3.weight"},
                       {"feed_forward.down_proj.weight", "feed_forward.w2.weight"},
                       {"feed_forward.router.weight", "moe.router.gate.weight"},
                       {"feed_forward.shared_expert.gate_proj.weight", "moe.shared_experts.w1.weight"},
                       {"feed_forward.shared_expert.up_proj.weight", "moe.shared_experts.w3.weight"},
                       {"feed_forward.shared_expert.down_proj.weight", "moe.shared_experts.w2.weight"},
                       {"feed_forward.experts.down_proj", "moe.experts.w2"}});
    return m;
  }();
  return args.moe ? llama4 : llama3;
}

// Llama 4's fused gate and up projections of all experts: (E, dim, 2 hidden) = [w1^T | w3^T].
constexpr const char* kGateUp = "feed_forward.experts.gate_up_proj";

const NameMap& top_map() {
  static const NameMap m = {
      {"model.embed_tokens.weight", "tok_embeddings.weight"},
      {"model.norm.weight", "norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  return m;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Llama 4's MoE fields; the options our model does not have must be off (their names are HF's).
void read_llama4_fields(const JsonFields& c, const std::string& path, llama3::ModelArgs& a) {
  a.moe = MoEArgs{};
  a.moe->num_experts = c.need_as<int64_t>("num_local_experts");
  a.moe->top_k = c.get<int64_t>("num_experts_per_tok", 1);
  a.moe_intermediate_size = a.intermediate_size;  // the experts' and the shared expert's
  a.intermediate_size = c.need_as<int64_t>("intermediate_size_mlp");
  a.interleave_moe_layer_step = c.get<int64_t>("interleave_moe_layer_step", 1);
  auto refuse = [&](const std::string& what) {
    throw Err(path + ": " + what + " is not supported (TorchTitan's llama4 flavors without iRoPE have it off)");
  };
  if (c.get<bool>("use_qk_norm", true)) refuse("use_qk_norm true (QK norm)");
  if (c.get<bool>("attention_bias", false)) refuse("attention_bias true");
  if (c.has("attention_chunk_size")) refuse("attention_chunk_size (chunked attention)");
  if (!c.has("no_rope_layers"))
    refuse("no no_rope_layers (transformers then makes every no_rope_layer_interval-th layer NoPE)");
  for (int64_t v : c.need_as<std::vector<int64_t>>("no_rope_layers"))
    if (v == 0) refuse("a 0 in no_rope_layers (NoPE layers)");
  if (c.has("moe_layers")) {
    std::vector<int64_t> expected;
    for (int64_t l = a.interleave_moe_layer_step - 1; l < a.n_layers; l += a.interleave_moe_layer_step) expected.push_back(l);
    if (c.need_as<std::vector<int64_t>>("moe_layers") != expected)
      refuse("moe_layers other than every interleave_moe_layer_step-th layer");
  }
}

}  // namespace

std::vector<std::string> to_native_keys(const std::string& key, const llama3::ModelArgs& args) {
  std::string hf_key = key;
  if (args.moe) {  // Llama4ForConditionalGeneration holds the text model under language_model.
    if (hf_key.rfind("vision_model.", 0) == 0 || hf_key.rfind("multi_modal_projector.", 0) == 0) return {};
    if (hf_key.rfind("language_model.", 0) == 0) hf_key = hf_key.substr(15);
  }
  for (const auto& [hf, native] : top_map())
    if (hf_key == hf) return {native};
  static const std::regex layer("model\\.layers\\.(\\d+)\\.(.+)");
  std::smatch m;
  if (std::regex_match(hf_key, m, layer)) {
    const std::string prefix = "layers." + m[1].str() + ".";
    if (m[2] == "self_attn.rotary_emb.inv_freq") return {};
    if (args.moe && m[2] == kGateUp) return {prefix + "moe.experts.w1", prefix + "moe.experts.w3"};
    for (const auto& [hf, native] : layer_map(args))
      if (m[2] == hf) return {prefix + native};
  }
  throw Err("'" + key + "' is not a " + (args.moe ? "Llama 4" : "Llama") + " weight name");
}

std::optional<std::string> to_hf_key(const std::string& native_key, const llama3::ModelArgs& args) {
  for (const auto& [hf, native] : top_map())
    if (native_key == native) return hf;
  static const std::regex layer("layers\\.(\\d+)\\.(.+)");
  std::smatch m;
  if (std::regex_match(native_key, m, layer)) {
    const std::string prefix = "model.layers." + m[1].str() + ".";
    if (args.moe && m[2] == "moe.expert_bias") return std::nullopt;  // load balancing state, not a weight
    if (args.moe && (m[2] == "moe.experts.w1" || m[2] == "moe.experts.w3")) return prefix + kGateUp;
    for (const auto& [hf, native] : layer_map(args))
      if (m[2] == native) return prefix + hf;
  }
  throw Err("'" + native_key + "' has no Hugging Face name");
}

std::vector<std::pair<std::string, torch::Tensor>> from_hf(const std::string& hf_key, const torch::Tensor& w,
                                                           const llama3::ModelArgs& args) {
  // Views where a layout changes: the caller copies them into its targets.
  const auto keys = to_native_keys(hf_key, args);
  if (keys.empty()) return {};
  if (keys.size() == 2) {  // gate_up_proj (E, dim, 2 hidden) -> w1, w3 (E, hidden, dim)
    auto halves = w.chunk(2, -1);
    return {{keys[0], halves[0].transpose(-1, -2)}, {keys[1], halves[1].transpose(-1, -2)}};
  }
  const auto& key = keys[0];
  if (ends_with(key, "moe.experts.w2")) return {{key, w.transpose(-1, -2)}};  // (E, dim, hidden)
  if (auto heads = permute_heads(key, args)) return {{key, permute_from_hf(w, *heads)}};
  return {{key, w}};
}

std::vector<std::pair<std::string, torch::Tensor>> to_hf(const std::vector<std::pair<std::string, torch::Tensor>>& native,
                                                         const llama3::ModelArgs& args) {
  std::map<std::string, torch::Tensor> w3_of;  // layer prefix -> experts.w3, fused with w1 at w1's place
  for (const auto& [key, w] : native)
    if (args.moe && ends_with(key, "moe.experts.w3")) w3_of[key.substr(0, key.size() - 2)] = w;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [key, w] : native) {
    const auto hf_key = to_hf_key(key, args);
    if (!hf_key || (args.moe && ends_with(key, "moe.experts.w3"))) continue;
    if (args.moe && ends_with(key, "moe.experts.w1")) {
      auto w3 = w3_of.find(key.substr(0, key.size() - 2));
      if (w3 == w3_of.end()) throw Err("'" + key + "' has no matching moe.experts.w3 to fuse into " + *hf_key);
      out.emplace_back(*hf_key, torch::cat({w.transpose(-1, -2), w3->second.transpose(-1, -2)}, -1));
    } else if (ends_with(key, "moe.experts.w2")) {
      out.emplace_back(*hf_key, w.transpose(-1, -2));  // (E, hidden, dim)
    } else if (auto heads = permute_heads(key, args)) {
      out.emplace_back(*hf_key, permute_to_hf(w, *heads));
    } else {
      out.emplace_back(*hf_key, w);
    }
  }
  return out;
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
  if (args.moe) return std::nullopt;  // Llama 4 rotates interleaved pairs, as we do
  if (ends_with(native_key, "attention.wq.weight")) return args.n_heads;
  if (ends_with(native_key, "attention.wk.weight")) return args.kv_heads();
  return std::nullopt;
}

llama3::ModelArgs model_args_from_config(const std::string& config_path) {
  return model_args_from_json(read_json_file(config_path), config_path);
}

llama3::ModelArgs model_args_from_json(const nlohmann::json& config, const std::string& config_path) {
  // Llama4ForConditionalGeneration nests the text model's config.
  const JsonFields top(config, config_path);
  const JsonFields c = top.get<std::string>("model_type", "") == "llama4" && top.has("text_config")
                             ? top.nested("text_config")
                             : top;
  try {
    llama3::ModelArgs a;
    a.dim = c.need_as<int64_t>("hidden_size");
    a.n_layers = c.need_as<int64_t>("num_hidden_layers");
    a.n_heads = c.need_as<int64_t>("num_attention_heads");
    a.n_kv_heads = c.get<int64_t>("num_key_value_heads", a.n_heads);
    a.intermediate_size = c.need_as<int64_t>("intermediate_size");
    a.vocab_size = c.need_as<int64_t>("vocab_size");
    a.rope_theta = c.get<double>("rope_theta", 10000.0);
    a.norm_eps = c.get<double>("rms_norm_eps", 1e-6);
    a.tie_word_embeddings = c.get<bool>("tie_word_embeddings", false);
    a.max_seq_len = c.get<int64_t>("max_position_embeddings", 131072);
    if (c.has("head_dim") && c.need_as<int64_t>("head_dim") != a.dim / a.n_heads)
      throw Err(config_path + ": head_dim " + std::to_string(c.need_as<int64_t>("head_dim")) +
                " != hidden_size / num_attention_heads is not supported");
    a.rope_scaling = std::nullopt;
    // transformers 5 writes rope_parameters (theta inside, "default" = unscaled); 4.x rope_scaling.
    const bool v5 = c.has("rope_parameters");
    const std::string rope_key = v5 ? "rope_parameters" : "rope_scaling";
    if (c.has(rope_key)) {
      const JsonFields rope = c.nested(rope_key);
      a.rope_theta = rope.get<double>("rope_theta", a.rope_theta);
      const std::string type = rope.get<std::string>("rope_type", rope.get<std::string>("type", ""));
      if (type == "llama3") {
        llama3::RopeScaling s;
        s.factor = rope.need_as<double>("factor");
        s.low_freq_factor = rope.need_as<double>("low_freq_factor");
        s.high_freq_factor = rope.need_as<double>("high_freq_factor");
        s.original_max_position_embeddings = rope.need_as<int64_t>("original_max_position_embeddings");
        a.rope_scaling = s;
      } else if (!(v5 && type == "default")) {
        throw Err(config_path + ": " + rope_key + " type '" + type + "' is not supported (valid: llama3" +
                  (v5 ? ", default)" : ")"));
      }
    }
    const std::string type = c.get<std::string>("model_type", "llama");
    if (type == "llama4_text") read_llama4_fields(c, config_path, a);
    else if (type != "llama") throw Err(config_path + ": model_type '" + type + "' is not supported (valid: llama, llama4_text, llama4)");
    a.validate();
    return a;
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
  if (a.moe) {  // Llama4ForCausalLM with what our layer has: every layer RoPE, full attention, no QK norm
    const auto& m = *a.moe;
    if (m.score_func != "sigmoid" || m.route_norm || m.route_scale != 1.0 || !m.score_before_experts ||
        m.num_shared_experts != 1)
      throw Err("Hugging Face's Llama 4 layer has a sigmoid router without route_norm or route_scale, scores applied "
                "before the experts and one shared expert; this model's MoE differs");
    std::vector<int64_t> moe_layers;
    for (int64_t l = 0; l < a.n_layers; ++l)
      if (a.moe_layer(l)) moe_layers.push_back(l);
    c["architectures"] = {"Llama4ForCausalLM"};
    c["model_type"] = "llama4_text";
    c["intermediate_size"] = a.moe_hidden_dim();
    c["intermediate_size_mlp"] = a.ffn_hidden_dim();
    c["num_local_experts"] = m.num_experts;
    c["num_experts_per_tok"] = m.top_k;
    c["interleave_moe_layer_step"] = a.interleave_moe_layer_step;
    c["moe_layers"] = moe_layers;
    c["use_qk_norm"] = false;
    c["no_rope_layers"] = std::vector<int64_t>(static_cast<size_t>(a.n_layers), 1);
    c["attention_chunk_size"] = nullptr;
    c["attn_temperature_tuning"] = false;
    c.erase("mlp_bias");
  }
  return c;
}

void check_config_matches(const nlohmann::json& config, const std::string& where, const llama3::ModelArgs& args,
                          const std::string& remedy) {
  // Both as config.json would say them; the sequence length and dtype are the run's to choose.
  auto theirs = config_from_model_args(model_args_from_json(config, where), torch::kFloat32);
  auto ours = config_from_model_args(args, torch::kFloat32);
  for (auto* c : {&theirs, &ours}) c->erase("max_position_embeddings");
  for (const auto& [field, value] : ours.items())
    if (theirs[field] != value)
      throw Err(where + ": " + field + " = " + theirs[field].dump() + " but this model has " + value.dump() + " (" + remedy + ")");
}

void check_config_matches(const std::string& config_path, const llama3::ModelArgs& args) {
  check_config_matches(read_json_file(config_path), config_path, args,
                       "model.flavor differs; use --model.flavor from_hf to build the model from config.json");
}

}  // namespace titan::hf
