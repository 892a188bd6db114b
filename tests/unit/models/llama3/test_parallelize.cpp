// The Llama plan's pipeline split against PARALLELISM.md §2.1 (TorchTitan's
// generate_llm_fqn_per_model_part on the debug model), its checks of named stages, TorchTitan's
// stage-count rules, and a stage's part of the model computing what the whole model computes.
#include <gtest/gtest.h>

#include "models/common/torch_api.h"
#include "models/llama3/model.h"
#include "models/llama3/parallelize.h"
#include "parallel/pipeline_schedule.h"
#include "tests/unit/error_message.h"

namespace titan::llama3 {
namespace {

using Stages = std::vector<std::vector<std::string>>;

bool starts_with(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

using testing::message_of;

TEST(Llama3Pipeline, StagesOfTheDebugModelAsTorchTitan) {
  const ModelArgs debug = flavor_args("debugmodel");  // 6 layers
  EXPECT_EQ(pipeline_stage_modules(debug, 2, 1, 1),
            (Stages{{"tok_embeddings", "layers.0", "layers.1", "layers.2"}, {"layers.3", "layers.4", "layers.5", "norm", "output"}}));
  EXPECT_EQ(pipeline_stage_modules(debug, 4, 1, 1),
            (Stages{{"tok_embeddings", "layers.0"}, {"layers.1", "layers.2"}, {"layers.3", "layers.4"}, {"layers.5", "norm", "output"}}));
  const Stages eight = pipeline_stage_modules(debug, 8, 1, 1);
  EXPECT_EQ(eight.front(), (std::vector<std::string>{"tok_embeddings"}));
  EXPECT_EQ(eight[3], (std::vector<std::string>{"layers.2"}));
  EXPECT_EQ(eight.back(), (std::vector<std::string>{"norm", "output"}));
  // 3 stages over 8 effective layers: the first two get one more (3, 3, 2).
  EXPECT_EQ(pipeline_stage_modules(debug, 3, 1, 1),
            (Stages{{"tok_embeddings", "layers.0", "layers.1"}, {"layers.2", "layers.3", "layers.4"}, {"layers.5", "norm", "output"}}));
  EXPECT_EQ(message_of([&] { pipeline_stage_modules(debug, 9, 1, 1); }),
            "Number of stages (9) cannot be greater than effective layers (8)");
  EXPECT_EQ(message_of([&] { pipeline_stage_modules(debug, 4, 3, 1); }),
            "parallelism.pipeline_parallel_first_stage_less_layers (3) exceeds minimum layers per stage (2).");
}

TEST(Llama3Pipeline, NamedStagesHoldEveryModuleOnceInForwardOrder) {
  const ModelArgs debug = flavor_args("debugmodel");
  EXPECT_NO_THROW(check_pipeline_stage_modules(
      debug, {{"tok_embeddings", "layers.0", "layers.1"}, {"layers.2", "layers.3", "layers.4", "layers.5", "norm", "output"}}));
  EXPECT_EQ(message_of([&] { check_pipeline_stage_modules(debug, {{"tok_embeddings", "layers.0"}, {}}); }),
            "pipeline stage 1 holds no module");
  EXPECT_EQ(message_of([&] { check_pipeline_stage_modules(debug, {{"tok_embeddings", "layers.9"}}); }),
            "pipeline stage 0: 'layers.9' is not a module of the model");
  EXPECT_EQ(message_of([&] {
              check_pipeline_stage_modules(debug, {{"tok_embeddings", "layers.0", "layers.1", "layers.2", "layers.3", "layers.4"},
                                                   {"layers.5", "norm"}});
            }),
            "no pipeline stage holds 'output'");
  EXPECT_EQ(message_of([&] { check_pipeline_stage_modules(debug, {{"tok_embeddings", "layers.1", "layers.0"}}); }),
            "pipeline stage 0: 'layers.1' comes before 'layers.0', which no stage holds (stages hold the modules in forward order)");
}

TEST(Llama3Pipeline, StageCountsAsTorchTitan) {
  const auto looped = pipeline_schedule_kind("Interleaved1F1B"), single = pipeline_schedule_kind("1F1B");
  EXPECT_EQ(pipeline_num_stages(looped, 2, 6, std::nullopt, 1, 1), 4);  // two per rank
  EXPECT_EQ(pipeline_num_stages(single, 4, 6, std::nullopt, 1, 1), 4);
  EXPECT_EQ(pipeline_num_stages(looped, 4, 6, 1, 1, 1), 8);  // ceil((6 + 1 + 1) / 1)
  EXPECT_EQ(pipeline_num_stages(single, 2, 6, 4, 1, 1), 2);  // TorchTitan's pp_dp_1f1b with layers_per_stage 4
  EXPECT_PRED2(starts_with, message_of([&] { pipeline_num_stages(looped, 2, 6, 3, 1, 1); }),
              "Number of virtual stages (3) must be divisible by pipeline parallel size (2). Model has 6 la");
  EXPECT_PRED2(starts_with, message_of([&] { pipeline_num_stages(single, 2, 6, 2, 1, 1); }),
              "Single stage schedule requires exactly 1 stage per rank, but got 2 stages per rank.");
  EXPECT_PRED2(starts_with, message_of([&] { pipeline_num_stages(looped, 2, 6, 4, 1, 1); }),
              "Multi-stage schedule requires at least 2 stages per rank, but got 1 stages per rank.");
}

// Stage parts chained by hand compute the whole model's logits, with global parameter names.
TEST(Llama3Pipeline, PartsChainedEqualTheWholeModel) {
  ModelArgs args = flavor_args("debugmodel");
  args.n_layers = 3;
  args.max_seq_len = 16;
  torch::set_num_threads(1);
  Transformer whole(args);
  whole->init_weights(3);
  const Stages stages = pipeline_stage_modules(args, 3, 1, 1);  // [tok, l0] [l1] [l2, norm, output]
  std::vector<Transformer> parts;
  for (const auto& modules : stages) {
    parts.emplace_back(args, torch::TensorOptions(), modules);
    parts.back()->init_weights(3);  // per-FQN generators: the same values as the whole model's
  }
  std::vector<std::string> names;
  for (const auto& p : parts[1]->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names.front(), "layers.1.attention.wq.weight");
  const auto tokens = torch::randint(0, args.vocab_size, {2, 16}, torch::kLong);  // (B, T)
  torch::NoGradGuard no_grad;
  auto h = tokens;
  for (auto& part : parts) h = part->forward(h);  // (2, 16, dim) between parts, logits at the end
  EXPECT_TRUE(torch::equal(h, whole->forward(tokens)));
  EXPECT_EQ(message_of([&] { Transformer(args, torch::TensorOptions(), std::vector<std::string>{"layers.3"}); }),
            "llama3: 'layers.3' is not a module of the model (valid: tok_embeddings, layers.0 .. layers.2, norm, output)");
}

}  // namespace
}  // namespace titan::llama3
