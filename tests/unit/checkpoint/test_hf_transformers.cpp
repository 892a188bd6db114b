// Our Hugging Face folders against the real transformers (from PyPI, tests/reference/transformers_peer.py):
// its LlamaForCausalLM and Llama4ForCausalLM give our logits after loading our export, and ours give
// its logits after we load its save_pretrained folder.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "checkpoint/hf_adapter.h"
#include "checkpoint/hf_checkpoint.h"
#include "checkpoint/safetensors.h"
#include "models/common/torch_api.h"
#include "models/llama3/model.h"

namespace titan::hf {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("titan_hf_transformers_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void peer(const std::string& args) {
  const std::string cmd = std::string(TITAN_SOURCE_DIR) + "/.venv/bin/python " + TITAN_SOURCE_DIR +
                          "/tests/reference/transformers_peer.py " + args + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}

std::map<std::string, torch::Tensor> read_all(const fs::path& file) {
  const auto header = safetensors::read_header(file.string());
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : header.tensors) out[info.name] = safetensors::read_tensor(file.string(), header, info);
  return out;
}

// Llama 3.1 layout at toy size: GQA, llama3 RoPE scaling with every band present at head_dim 16.
llama3::ModelArgs toy_args(bool tied) {
  llama3::ModelArgs a;
  a.dim = 64, a.n_layers = 2, a.n_heads = 4, a.n_kv_heads = 2, a.vocab_size = 96, a.intermediate_size = 160;
  a.rope_theta = 500000, a.norm_eps = 1e-5, a.max_seq_len = 2048, a.tie_word_embeddings = tied;
  a.rope_scaling = llama3::RopeScaling{8.0, 1.0, 4.0, 64};
  return a;
}

// Llama 4's layout at toy size: MoE in layers 1 and 3 (4 experts, top 2, one shared expert), dense
// FFNs of another width in layers 0 and 2; every layer RoPE, full attention, no QK norm.
llama3::ModelArgs toy_llama4_args() {
  auto a = toy_args(false);
  a.n_layers = 4, a.moe = MoEArgs{}, a.moe->num_experts = 4, a.moe->top_k = 2, a.moe_intermediate_size = 48;
  return a;
}

// Weights large enough that attention is sharp and a RoPE layout error changes the logits.
void randomize(llama3::Transformer& model) {
  torch::NoGradGuard no_grad;
  auto g = at::make_generator<at::CPUGeneratorImpl>(7);
  for (auto& p : model->named_parameters()) {
    const auto& name = p.key();
    auto r = at::randn(p.value().sizes(), g, torch::kFloat32);
    if (name.find("norm") != std::string::npos) p.value().copy_(1 + 0.1 * r);
    else if (name.find("wq") != std::string::npos || name.find("wk") != std::string::npos) p.value().copy_(0.3 * r);
    else if (name.find("router") != std::string::npos) p.value().copy_(0.3 * r);  // clear choices, no sigmoid ties
    else if (name == "tok_embeddings.weight") p.value().copy_(r);
    else p.value().copy_(0.1 * r);
  }
}

std::vector<checkpoint::ShardedTensor> tensors_of(llama3::Transformer& model) {
  std::vector<checkpoint::ShardedTensor> out;
  for (auto& p : model->named_parameters()) out.push_back(checkpoint::ShardedTensor::whole(p.key(), p.value()));
  return out;
}

void expect_same_logits(const torch::Tensor& ours, const torch::Tensor& theirs) {
  ASSERT_EQ(ours.sizes(), theirs.sizes());
  const double diff = (ours - theirs).abs().max().item<double>();
  const double scale = theirs.abs().max().item<double>();
  EXPECT_LE(diff, 1e-5 * std::max(1.0, scale)) << "max |logit| " << scale;
  EXPECT_GT(scale, 1.0) << "the logits are too flat to tell layouts apart";
}

// transformers' tokens and logits for our export of `model` in `dtype` (made under `dir`).
std::map<std::string, torch::Tensor> transformers_on_export(llama3::Transformer& model, const llama3::ModelArgs& args,
                                                            torch::ScalarType dtype, const fs::path& dir) {
  save_hf_model((dir / "hf").string(), tensors_of(model), args, dtype, int64_t{1} << 30, std::nullopt);
  peer("logits " + (dir / "hf").string() + " " + (dir / "out.safetensors").string());
  return read_all(dir / "out.safetensors");
}

// transformers makes the model `config` describes, with random weights, and saves it; we load the
// folder and must give its logits. Returns the model arguments we read from its config.json.
llama3::ModelArgs expect_transformers_save_loads(const nlohmann::json& config, const std::string& name) {
  const auto dir = scratch(name);
  std::ofstream(dir / "config.json") << config.dump();
  peer("save " + (dir / "hf").string() + " " + (dir / "config.json").string() + " " + (dir / "out.safetensors").string());
  const auto args = model_args_from_config((dir / "hf" / "config.json").string());
  llama3::Transformer model(args);
  auto targets = tensors_of(model);
  load_hf_model((dir / "hf").string(), targets, args);
  auto out = read_all(dir / "out.safetensors");
  torch::NoGradGuard no_grad;
  expect_same_logits(model->forward(out.at("tokens")), out.at("logits"));
  fs::remove_all(dir);
  return args;
}

class HfTransformers : public ::testing::TestWithParam<bool> {};

TEST_P(HfTransformers, OurExportGivesTransformersOurLogits) {
  torch::set_num_threads(1);
  const bool tied = GetParam();
  const auto args = toy_args(tied);
  llama3::Transformer model(args);
  randomize(model);
  const auto dir = scratch(tied ? "export_tied" : "export_untied");
  auto out = transformers_on_export(model, args, torch::kFloat32, dir);
  torch::NoGradGuard no_grad;
  expect_same_logits(model->forward(out.at("tokens")), out.at("logits"));
  fs::remove_all(dir);
}

TEST_P(HfTransformers, TransformersSaveGivesUsTheirLogits) {
  torch::set_num_threads(1);
  const bool tied = GetParam();
  // transformers' own config keys (rope_parameters, as transformers 5 writes them).
  nlohmann::json config = {{"model_type", "llama"}, {"hidden_size", 64}, {"num_hidden_layers", 2},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"intermediate_size", 160},
                           {"vocab_size", 96}, {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 2048},
                           {"tie_word_embeddings", tied},
                           {"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                                                {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                                {"original_max_position_embeddings", 64}}}};
  const auto args = expect_transformers_save_loads(config, tied ? "save_tied" : "save_untied");
  EXPECT_EQ(args.rope_theta, 500000.0);
  ASSERT_TRUE(args.rope_scaling.has_value());
  EXPECT_EQ(args.rope_scaling->original_max_position_embeddings, 64);
}

// A bfloat16 export is our model with every weight rounded to bfloat16 (transformers computes in fp32).
TEST(HfTransformersBf16, ExportIsOurModelRoundedToBf16) {
  torch::set_num_threads(1);
  const auto args = toy_args(false);
  llama3::Transformer model(args);
  randomize(model);
  const auto dir = scratch("export_bf16");
  auto out = transformers_on_export(model, args, torch::kBFloat16, dir);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.copy_(p.to(torch::kBFloat16).to(torch::kFloat32));
  expect_same_logits(model->forward(out.at("tokens")), out.at("logits"));
  fs::remove_all(dir);
}

TEST(HfTransformersLlama4, OurExportGivesTransformersOurLogits) {
  torch::set_num_threads(1);
  const auto args = toy_llama4_args();
  llama3::Transformer model(args);
  randomize(model);
  const auto dir = scratch("export_llama4");
  auto out = transformers_on_export(model, args, torch::kFloat32, dir);
  const auto config = nlohmann::json::parse(std::ifstream(dir / "hf" / "config.json"));
  EXPECT_EQ(config["architectures"][0], "Llama4ForCausalLM");
  torch::NoGradGuard no_grad;
  expect_same_logits(model->forward(out.at("tokens")), out.at("logits"));
  fs::remove_all(dir);
}

TEST(HfTransformersLlama4, TransformersSaveGivesUsTheirLogits) {
  torch::set_num_threads(1);
  nlohmann::json config = {{"model_type", "llama4_text"}, {"hidden_size", 64}, {"num_hidden_layers", 4},
                           {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16},
                           {"intermediate_size", 48}, {"intermediate_size_mlp", 160}, {"num_local_experts", 4},
                           {"num_experts_per_tok", 2}, {"interleave_moe_layer_step", 2}, {"vocab_size", 96},
                           {"rms_norm_eps", 1e-5}, {"max_position_embeddings", 2048}, {"use_qk_norm", false},
                           {"no_rope_layers", {1, 1, 1, 1}}, {"attention_chunk_size", nullptr},
                           {"rope_parameters", {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                                                {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                                {"original_max_position_embeddings", 64}}}};
  const auto args = expect_transformers_save_loads(config, "save_llama4");
  ASSERT_TRUE(args.moe.has_value());
  EXPECT_EQ(args.moe->num_experts, 4);
  EXPECT_EQ(args.moe_hidden_dim(), 48);
  EXPECT_EQ(args.ffn_hidden_dim(), 160);
}

INSTANTIATE_TEST_SUITE_P(TiedAndUntied, HfTransformers, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "tied" : "untied"; });

}  // namespace
}  // namespace titan::hf
