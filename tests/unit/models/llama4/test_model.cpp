// The Llama 4 (MoE) model against tests/reference/llama4_reference.py (an independent eager-PyTorch
// MoE: every expert on every token, masked) and against TorchTitan's published dimensions.
#include <gtest/gtest.h>

#include <cmath>

#include "models/common/torch_api.h"
#include "models/llama3/model.h"
#include "models/llama4/model_args.h"
#include "parallel/grad_norm.h"
#include "tests/unit/error_message.h"
#include "tests/unit/models/reference_model.h"
#include "tests/unit/reference_fixture.h"
#include "trainer/job_config.h"
#include "trainer/lr_scheduler.h"
#include "trainer/optimizer.h"

namespace titan::llama4 {
namespace {

using llama3::ModelArgs;
using llama3::Transformer;
using titan::testing::load_fixture;
using titan::testing::mean_loss;
using titan::testing::reference_tokens;

const nlohmann::json& fixture() {
  static const nlohmann::json f = load_fixture("tests/assets/reference/llama4_tiny.json");
  return f;
}

ModelArgs tiny_args(const std::string& variant) {
  const auto& c = fixture()["config"];
  const auto& v = fixture()["variants"][variant];
  ModelArgs a = titan::testing::reference_model_args(c);
  a.interleave_moe_layer_step = c["interleave_moe_layer_step"];
  a.moe = MoEArgs{};
  a.moe->num_experts = c["num_experts"], a.moe->top_k = c["top_k"], a.moe->num_shared_experts = c["num_shared_experts"];
  a.moe->load_balance_coeff = c["load_balance_coeff"].get<double>();
  a.moe->score_func = v["score_func"], a.moe->route_norm = v["route_norm"], a.moe->route_scale = v["route_scale"];
  a.moe->score_before_experts = v["score_before_experts"];
  return a;
}

Transformer tiny_model(const std::string& variant) {
  torch::set_num_threads(1);
  Transformer model(tiny_args(variant));
  model->init_weights(fixture()["config"]["seed"].get<uint64_t>());
  return model;
}

const char* const kVariants[] = {"sigmoid_score_before", "softmax_norm_score_after"};

TEST(Llama4Model, DebugModelHasTorchTitansParameterCount) {
  Transformer model(flavor_args("debugmodel"), torch::TensorOptions().device(torch::kMeta));
  EXPECT_EQ(model->num_params(), 15017216);
  const auto args = flavor_args("debugmodel");
  EXPECT_EQ(args.moe_hidden_dim(), 512);
  EXPECT_EQ(args.ffn_hidden_dim(), 768);
  std::vector<int64_t> moe_layers;
  for (int64_t l = 0; l < args.n_layers; ++l)
    if (args.moe_layer(l)) moe_layers.push_back(l);
  EXPECT_EQ(moe_layers, (std::vector<int64_t>{1, 3, 5}));
  int64_t layer1 = 0;
  for (const auto& p : model->layers["1"]->named_parameters()) layer1 += p.value().numel();
  EXPECT_EQ(layer1, 3803648);
  EXPECT_EQ(flavor_args("17bx16e").moe->num_experts, 16);
  EXPECT_EQ(flavor_args("17bx128e").rope_scaling, std::nullopt);
  EXPECT_EQ(flavor_args("17bx16e").interleave_moe_layer_step, 1);
}

TEST(Llama4Model, UnknownAndIRoPEFlavorsAreOneLineErrors) {
  using titan::testing::message_of;
  EXPECT_EQ(message_of([] { flavor_args("debugmodel_irope"); }),
            "model.flavor 'debugmodel_irope' (iRoPE: NoPE layers and FlexAttention's chunked block-causal masks) is not "
            "supported yet; valid flavors: debugmodel, 17bx16e, 17bx128e");
  EXPECT_EQ(message_of([] { flavor_args("8B"); }),
            "model.flavor '8B' is not a llama4 flavor; valid flavors: debugmodel, 17bx16e, 17bx128e");
}

TEST(Llama4Model, InitMatchesReferenceBitForBit) {
  auto model = tiny_model(kVariants[0]);
  for (const auto& p : model->named_parameters()) {
    const auto& ref = fixture()["init"][p.key()];
    ASSERT_FALSE(ref.is_null()) << p.key();
    EXPECT_NEAR(p.value().to(torch::kFloat64).sum().item<double>(), ref["sum"].get<double>(),
                1e-9 + 1e-9 * std::abs(ref["sum"].get<double>())) << p.key();
    auto flat = p.value().flatten();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(flat[i].item<float>(), ref["first"][i].get<float>()) << p.key() << "[" << i << "]";
  }
  EXPECT_EQ(model->named_parameters().size(), fixture()["init"].size());
}

TEST(Llama4Model, ForwardGradientsAndCountsMatchReference) {
  for (const char* variant : kVariants) {
    auto model = tiny_model(variant);
    const auto& ref = fixture()[variant]["first_step"];
    auto loss = mean_loss(model, reference_tokens(fixture(), 0));
    EXPECT_NEAR(loss.item<double>(), ref["loss"].get<double>(), 1e-5) << variant;
    loss.backward();
    for (const auto& p : model->named_parameters()) {
      const double expected = ref["grad_norms"][p.key()].get<double>();
      EXPECT_NEAR(p.value().grad().norm().item<double>(), expected, 1e-6 + 1e-4 * expected) << variant << " " << p.key();
    }
    const auto layers = model->moe_layers();
    ASSERT_EQ(layers.size(), ref["tokens_per_expert"].size());
    for (size_t l = 0; l < layers.size(); ++l)
      for (int64_t e = 0; e < layers[l]->args().num_experts; ++e)
        EXPECT_EQ(layers[l]->tokens_per_expert[e].item<double>(), ref["tokens_per_expert"][l][e].get<double>());
  }
}

// TorchTitan's step: clip, then the bias update (its optimizer pre-step hook), then AdamW.
TEST(Llama4Model, TrainingStepsWithBiasUpdatesMatchReference) {
  for (const char* variant : kVariants) {
    auto model = tiny_model(variant);
    const auto& c = fixture()["config"];
    const JobConfig::Optimizer opt_cfg = titan::testing::reference_optimizer(c);
    const JobConfig::LRScheduler sched_cfg = titan::testing::reference_schedule(c);
    AdamW opt(model->named_parameters().pairs(), opt_cfg);
    LRScheduler sched(sched_cfg, c["steps"]);
    std::vector<torch::Tensor> params = model->parameters();
    for (size_t s = 0; s < fixture()[variant]["train"].size(); ++s) {
      const auto& ref = fixture()[variant]["train"][s];
      opt.zero_grad();
      auto loss = mean_loss(model, reference_tokens(fixture(), s));
      loss.backward();
      const double norm = grad_norm(params, std::vector<bool>(params.size(), true));
      const auto layers = model->moe_layers();
      for (size_t l = 0; l < layers.size(); ++l) {
        update_expert_bias(layers[l]->expert_bias, layers[l]->tokens_per_expert, *layers[l]->args().load_balance_coeff);
        layers[l]->tokens_per_expert.zero_();
        for (int64_t e = 0; e < layers[l]->args().num_experts; ++e)
          EXPECT_NEAR(layers[l]->expert_bias[e].item<double>(), ref["expert_bias"][l][e].get<double>(), 1e-7)
              << variant << " step " << s + 1;
      }
      opt.step(opt_cfg.lr * sched.current_factor(), clip_coefficient(norm, c["max_norm"]));
      sched.step();
      EXPECT_NEAR(loss.item<double>(), ref["loss"].get<double>(), 2e-5) << variant << " step " << s + 1;
      EXPECT_NEAR(norm, ref["grad_norm"].get<double>(), 2e-5) << variant << " step " << s + 1;
    }
  }
}

}  // namespace
}  // namespace titan::llama4
