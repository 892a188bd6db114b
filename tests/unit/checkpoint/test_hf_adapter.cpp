// The Hugging Face key map and the q/k RoPE permutation.
#include <gtest/gtest.h>

#include "checkpoint/hf_adapter.h"
#include "models/llama4/model_args.h"

namespace titan::hf {
namespace {

TEST(HfAdapter, KeyMapBothWays) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"model.embed_tokens.weight", "tok_embeddings.weight"},
      {"model.layers.3.self_attn.q_proj.weight", "layers.3.attention.wq.weight"},
      {"model.layers.3.self_attn.k_proj.weight", "layers.3.attention.wk.weight"},
      {"model.layers.3.self_attn.v_proj.weight", "layers.3.attention.wv.weight"},
      {"model.layers.3.self_attn.o_proj.weight", "layers.3.attention.wo.weight"},
      {"model.layers.12.mlp.gate_proj.weight", "layers.12.feed_forward.w1.weight"},
      {"model.layers.12.mlp.up_proj.weight", "layers.12.feed_forward.w3.weight"},
      {"model.layers.12.mlp.down_proj.weight", "layers.12.feed_forward.w2.weight"},
      {"model.layers.0.input_layernorm.weight", "layers.0.attention_norm.weight"},
      {"model.layers.0.post_attention_layernorm.weight", "layers.0.ffn_norm.weight"},
      {"model.norm.weight", "norm.weight"},
      {"lm_head.weight", "output.weight"}};
  const llama3::ModelArgs args;
  for (const auto& [hf, native] : pairs) {
    EXPECT_EQ(to_native_keys(hf, args), std::vector<std::string>{native});
    EXPECT_EQ(to_hf_key(native, args), hf);
  }
  EXPECT_TRUE(to_native_keys("model.layers.0.self_attn.rotary_emb.inv_freq", args).empty());
  EXPECT_THROW(to_native_keys("model.layers.0.mlp.experts.0.weight", args), std::runtime_error);
}

TEST(HfAdapter, Llama4KeysAndFusedExperts) {
  auto args = llama3::ModelArgs();
  args.moe = MoEArgs{};
  EXPECT_EQ(to_native_keys("model.layers.1.feed_forward.router.weight", args),
            std::vector<std::string>{"layers.1.moe.router.gate.weight"});
  EXPECT_EQ(to_native_keys("language_model.model.layers.1.feed_forward.shared_expert.up_proj.weight", args),
            std::vector<std::string>{"layers.1.moe.shared_experts.w3.weight"});
  EXPECT_EQ(to_native_keys("model.layers.0.feed_forward.gate_proj.weight", args),
            std::vector<std::string>{"layers.0.feed_forward.w1.weight"});
  EXPECT_TRUE(to_native_keys("vision_model.patch_embedding.linear.weight", args).empty());
  EXPECT_FALSE(to_hf_key("layers.1.moe.expert_bias", args).has_value());
  // 2 experts, dim 3, hidden 2: gate_up_proj[e] = [w1[e]^T | w3[e]^T] (dim, 2 hidden), down_proj[e] = w2[e]^T.
  auto w1 = torch::arange(12, torch::kFloat32).view({2, 2, 3}), w3 = 100 + w1, w2 = 200 + torch::arange(12.0).view({2, 3, 2});
  auto hf = to_hf({{"layers.1.moe.experts.w1", w1}, {"layers.1.moe.experts.w2", w2}, {"layers.1.moe.experts.w3", w3}}, args);
  ASSERT_EQ(hf.size(), 2u);
  EXPECT_EQ(hf[0].first, "model.layers.1.feed_forward.experts.gate_up_proj");
  EXPECT_EQ(hf[0].second.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(hf[0].second[1][2][1].item<float>(), w1[1][1][2].item<float>());
  EXPECT_EQ(hf[0].second[1][2][3].item<float>(), w3[1][1][2].item<float>());
  EXPECT_EQ(hf[1].first, "model.layers.1.feed_forward.experts.down_proj");
  EXPECT_TRUE(torch::equal(hf[1].second, w2.transpose(1, 2)));
  auto back = from_hf(hf[0].first, hf[0].second, args);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(torch::equal(back[0].second, w1) && torch::equal(back[1].second, w3));
  EXPECT_TRUE(torch::equal(from_hf(hf[1].first, hf[1].second, args)[0].second, w2));
}

TEST(HfAdapter, PermutationMovesRowsWithinEachHead) {
  // 2 heads of head_dim 4: native row 2i+j of a head is HF row j*2+i.
  auto native = torch::arange(8, torch::kFloat32).view({8, 1});
  auto hf = permute_to_hf(native, 2);
  const std::vector<float> expected = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int r = 0; r < 8; ++r) EXPECT_EQ(hf[r][0].item<float>(), expected[r]) << r;
  auto w = torch::randn({6 * 8, 5});
  EXPECT_TRUE(torch::equal(permute_from_hf(permute_to_hf(w, 6), 6), w));
  llama3::ModelArgs args;
  args.n_heads = 32, args.n_kv_heads = 8;
  EXPECT_EQ(permute_heads("layers.1.attention.wq.weight", args), 32);
  EXPECT_EQ(permute_heads("layers.1.attention.wk.weight", args), 8);
  EXPECT_FALSE(permute_heads("layers.1.attention.wv.weight", args).has_value());
}

TEST(HfAdapter, ConfigRoundTrip) {
  llama3::ModelArgs a = llama3::flavor_args("8B");
  a.max_seq_len = 8192;
  auto c = config_from_model_args(a, torch::kBFloat16);
  EXPECT_EQ(c["intermediate_size"], 14336);
  EXPECT_EQ(c["num_key_value_heads"], 8);
  EXPECT_EQ(c["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(c["torch_dtype"], "bfloat16");
  auto b = model_args_from_json(c, "config");
  EXPECT_EQ(b.dim, 4096);
  EXPECT_EQ(b.ffn_hidden_dim(), 14336);
  EXPECT_EQ(b.rope_scaling->factor, 8.0);
  EXPECT_FALSE(b.tie_word_embeddings);
  c["rope_scaling"] = nullptr;
  c["tie_word_embeddings"] = true;
  auto d = model_args_from_json(c, "config");
  EXPECT_FALSE(d.rope_scaling.has_value());
  EXPECT_TRUE(d.tie_word_embeddings);
  c.erase("hidden_size");
  EXPECT_THROW(model_args_from_json(c, "config"), std::runtime_error);
}

std::string config_error(const nlohmann::json& c) {
  try {
    model_args_from_json(c, "config.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

// A field of the wrong type is named with its value and the type wanted, never a bare type_error.
TEST(HfAdapter, WrongTypedFieldIsNamed) {
  const auto good = config_from_model_args(llama3::flavor_args("debugmodel"), torch::kFloat32);
  auto c = good;
  c["hidden_size"] = "256";
  EXPECT_EQ(config_error(c), "config.json: field 'hidden_size' is \"256\" (a string), expected an integer");
  c = good;
  c["rms_norm_eps"] = true;
  EXPECT_EQ(config_error(c), "config.json: field 'rms_norm_eps' is true (true or false), expected a number");
  c = good;
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", "8"}};
  EXPECT_EQ(config_error(c), "config.json: field 'rope_scaling.factor' is \"8\" (a string), expected a number");
  c = good;
  c["rope_scaling"] = 3;
  EXPECT_EQ(config_error(c), "config.json: field 'rope_scaling' is an integer, expected an object");
  c = good;
  c["num_key_value_heads"] = 2.5;
  EXPECT_EQ(config_error(c), "config.json: field 'num_key_value_heads' is 2.5 (a number), expected an integer");
  c = config_from_model_args(llama4::flavor_args("debugmodel"), torch::kFloat32);
  c["no_rope_layers"] = {1, "1"};
  EXPECT_EQ(config_error(c), "config.json: field 'no_rope_layers' is [1,\"1\"] (a list), expected a list of integers");
  c = good;
  c["model_type"] = 7;
  EXPECT_EQ(config_error(c), "config.json: field 'model_type' is 7 (an integer), expected a string");
  c.erase("model_type");
  c.erase("vocab_size");
  EXPECT_EQ(config_error(c), "config.json: field 'vocab_size' is missing");
}

}  // namespace
}  // namespace titan::hf
