// The Hugging Face key map and the q/k RoPE permutation.
#include <gtest/gtest.h>

#include "checkpoint/hf_adapter.h"

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
  for (const auto& [hf, native] : pairs) {
    EXPECT_EQ(to_native_key(hf), native);
    EXPECT_EQ(to_hf_key(native), hf);
  }
  EXPECT_FALSE(to_native_key("model.layers.0.self_attn.rotary_emb.inv_freq").has_value());
  EXPECT_THROW(to_native_key("model.layers.0.mlp.experts.0.weight"), std::runtime_error);
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

}  // namespace
}  // namespace titan::hf
