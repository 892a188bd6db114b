// The Llama 3 model against tests/reference/llama3_reference.py (an independent eager-PyTorch
// implementation) and against TorchTitan's published dimensions.
#include <gtest/gtest.h>

#include <cmath>

#include "models/common/torch_api.h"
#include "models/llama3/activation_checkpoint.h"
#include "models/llama3/model.h"
#include "models/llama3/rope.h"
#include "parallel/grad_norm.h"
#include "tests/unit/models/reference_model.h"
#include "tests/unit/reference_fixture.h"
#include "trainer/job_config.h"
#include "trainer/lr_scheduler.h"
#include "trainer/optimizer.h"

namespace titan::llama3 {
namespace {

using titan::testing::load_fixture;
using titan::testing::mean_loss;
using titan::testing::reference_tokens;

const nlohmann::json& fixture() {
  static const nlohmann::json f = load_fixture("tests/assets/reference/llama3_tiny.json");
  return f;
}

ModelArgs tiny_args() { return titan::testing::reference_model_args(fixture()["config"]); }

Transformer tiny_model() {
  torch::set_num_threads(1);
  Transformer model(tiny_args());
  model->init_weights(fixture()["config"]["seed"].get<uint64_t>());
  return model;
}

TEST(Llama3Model, DebugModelHasTorchTitansParameterCount) {
  Transformer model(flavor_args("debugmodel"), torch::TensorOptions().device(torch::kMeta));  // nothing allocated
  EXPECT_EQ(model->num_params(), 6163712);
  EXPECT_EQ(model->tok_embeddings->weight.numel(), 524288);
  EXPECT_EQ(model->output->weight.numel(), 524288);
}

TEST(Llama3Model, FlavorDimensionsMatchTorchTitan) {
  EXPECT_EQ(flavor_args("debugmodel").ffn_hidden_dim(), 768);
  EXPECT_EQ(flavor_args("8B").ffn_hidden_dim(), 14336);
  EXPECT_EQ(flavor_args("70B").ffn_hidden_dim(), 28672);
  EXPECT_EQ(flavor_args("405B").ffn_hidden_dim(), 53248);
  EXPECT_EQ(flavor_args("8B").kv_heads(), 8);
  EXPECT_EQ(flavor_args("debugmodel").head_dim(), 16);
  EXPECT_THROW(flavor_args("7B"), std::invalid_argument);
}

TEST(Llama3Model, ParameterNamesAreTorchTitanFqns) {
  Transformer model(tiny_args());
  std::vector<std::string> names;
  for (const auto& p : model->named_parameters()) names.push_back(p.key());
  std::vector<std::string> expected;
  for (const auto& [name, _] : fixture()["init"].items()) expected.push_back(name);
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
  EXPECT_NE(std::find(names.begin(), names.end(), "layers.1.feed_forward.w3.weight"), names.end());
}

// Bit for bit on any CPU: the truncated normals' inverse CDF runs in float64 on both sides.
TEST(Llama3Model, InitMatchesReferenceBitForBit) {
  auto model = tiny_model();
  for (const auto& p : model->named_parameters()) {
    const auto& ref = fixture()["init"][p.key()];
    auto w = p.value().to(torch::kFloat64);
    EXPECT_NEAR(w.sum().item<double>(), ref["sum"].get<double>(), 1e-9 + 1e-9 * std::abs(ref["sum"].get<double>())) << p.key();
    EXPECT_NEAR(w.pow(2).sum().item<double>(), ref["sumsq"].get<double>(), 1e-9) << p.key();
    auto flat = p.value().flatten();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(flat[i].item<float>(), ref["first"][i].get<float>()) << p.key() << "[" << i << "]";
  }
}

TEST(Llama3Model, InitFollowsTorchTitanDistributions) {
  Transformer model(flavor_args("debugmodel"));
  model->init_weights(0);
  auto std_of = [](const torch::Tensor& t) { return t.std().item<double>(); };
  EXPECT_NEAR(std_of(model->tok_embeddings->weight), 1.0, 0.01);
  auto* block5 = model->layers["5"]->as<TransformerBlockImpl>();
  EXPECT_NEAR(std_of(block5->attention->wq->weight), 0.02, 0.0005);
  EXPECT_NEAR(std_of(block5->attention->wo->weight), 0.02 / std::sqrt(12.0), 0.0003);
  EXPECT_NEAR(std_of(block5->feed_forward->w3->weight), 0.02 / std::sqrt(12.0), 0.0003);
  const double out_std = 1.0 / 16.0;  // dim^-0.5, truncated at 3 sigma
  EXPECT_LE(model->output->weight.abs().max().item<double>(), 3 * out_std + 1e-7);
  EXPECT_NEAR(std_of(model->output->weight), out_std * 0.9866, 0.002);  // std of N(0,1) cut at +-3
  EXPECT_EQ(block5->ffn_norm->weight.sum().item<double>(), 256.0);
}

TEST(Llama3Model, ForwardAndGradientsMatchReference) {
  auto model = tiny_model();
  auto tokens = reference_tokens(fixture(), 0);
  const auto& ref = fixture()["first_step"];
  auto logits = model->forward(tokens.slice(1, 0, tokens.size(1) - 1));
  EXPECT_NEAR(logits.to(torch::kFloat64).sum().item<double>(), ref["logits_sum"].get<double>(), 1e-4);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(logits[0][-1][i].item<double>(), ref["logits_first"][i].get<double>(), 1e-5);
  auto loss = mean_loss(model, tokens);
  EXPECT_NEAR(loss.item<double>(), ref["loss"].get<double>(), 1e-5);
  loss.backward();
  for (const auto& p : model->named_parameters()) {
    const double expected = ref["grad_norms"][p.key()].get<double>();
    EXPECT_NEAR(p.value().grad().norm().item<double>(), expected, 1e-5 + 1e-4 * expected) << p.key();
  }
}

TEST(Llama3Model, TrainingStepsMatchTorchAdamWClipAndSchedule) {
  auto model = tiny_model();
  const auto& c = fixture()["config"];
  const JobConfig::Optimizer opt_cfg = titan::testing::reference_optimizer(c);
  const JobConfig::LRScheduler sched_cfg = titan::testing::reference_schedule(c);
  AdamW opt(model->named_parameters().pairs(), opt_cfg);
  LRScheduler sched(sched_cfg, c["steps"]);
  std::vector<torch::Tensor> params = model->parameters();
  for (size_t s = 0; s < fixture()["train"].size(); ++s) {
    const auto& ref = fixture()["train"][s];
    opt.zero_grad();
    auto loss = mean_loss(model, reference_tokens(fixture(), s));
    loss.backward();
    const double norm = grad_norm(params, std::vector<bool>(params.size(), true));
    opt.step(opt_cfg.lr * sched.current_factor(), clip_coefficient(norm, c["max_norm"]));
    sched.step();
    EXPECT_NEAR(loss.item<double>(), ref["loss"].get<double>(), 2e-5) << "step " << s + 1;
    EXPECT_NEAR(norm, ref["grad_norm"].get<double>(), 2e-5) << "step " << s + 1;
  }
  // Against the same run in float64, within 2e-5 plus PyTorch fp32's own distance from it: where Adam
  // steps on a gradient near zero (layers.0.attention.wk), fp32 rounding order alone moves a weight 4e-5.
  for (const auto& p : model->named_parameters()) {
    const auto& ref = fixture()["final"][p.key()];
    for (int i = 0; i < 4; ++i) {
      const double exact = ref["first_float64"][i].get<double>();
      const double fp32_error = std::abs(ref["first"][i].get<double>() - exact);
      EXPECT_NEAR(p.value().flatten()[i].item<double>(), exact, 2e-5 + fp32_error) << p.key();
    }
  }
}

TEST(Llama3Model, AttentionIsCausal) {
  auto model = tiny_model();
  torch::NoGradGuard no_grad;
  auto tokens = reference_tokens(fixture(), 0).slice(1, 0, 16).clone();
  auto before = model->forward(tokens);
  tokens[0][10] = (tokens[0][10].item<int64_t>() + 1) % 64;
  auto after = model->forward(tokens);
  EXPECT_TRUE(torch::equal(before.slice(1, 0, 10), after.slice(1, 0, 10)));
  EXPECT_FALSE(torch::allclose(before.slice(1, 10, 11), after.slice(1, 10, 11)));
}

TEST(Llama3ActivationCheckpoint, SameLossAndGradientsAsNone) {
  auto grads_with = [](const std::string& mode, const std::string& option, int64_t expected_blocks) {
    auto model = tiny_model();
    EXPECT_EQ(apply_activation_checkpointing(model, mode, option), expected_blocks) << mode << " " << option;
    auto loss = mean_loss(model, reference_tokens(fixture(), 1));
    loss.backward();
    std::vector<torch::Tensor> out = {loss.detach()};
    for (const auto& p : model->parameters()) out.push_back(p.grad().clone());
    return out;
  };
  auto none = grads_with("none", "2", 0);
  for (auto [mode, option, blocks] : {std::tuple{"full", "2", 2}, {"selective", "2", 1}, {"selective", "1", 2},
                                      {"selective", "0", 2}, {"selective", "3", 0}}) {
    auto other = grads_with(mode, option, blocks);
    ASSERT_EQ(other.size(), none.size());
    for (size_t i = 0; i < none.size(); ++i) EXPECT_TRUE(torch::equal(other[i], none[i])) << mode << " " << option << " #" << i;
  }
}

TEST(Llama3ActivationCheckpoint, SelectiveCountsBlocksFromOneAndRejectsOtherModes) {
  Transformer model(flavor_args("debugmodel"));
  EXPECT_EQ(apply_activation_checkpointing(model, "selective", "2"), 3);
  std::vector<bool> on;
  for (const auto& layer : model->layers->values()) on.push_back(layer->as<TransformerBlockImpl>()->checkpoint_activations);
  EXPECT_EQ(on, (std::vector<bool>{false, true, false, true, false, true}));  // TorchTitan: blocks 2, 4, 6 of 6
  EXPECT_THROW(apply_activation_checkpointing(model, "selective", "op"), std::invalid_argument);
  EXPECT_THROW(apply_activation_checkpointing(model, "memory_budget", "2"), std::invalid_argument);
}

TEST(Llama3Rope, Llama31ScalingByHand) {
  // head_dim 128, theta 500000: band 0 (wavelen 2*pi) is kept, the last band (wavelen > 8192) is
  // divided by 8, and a band whose wavelength lies in [2048, 8192] is interpolated.
  auto f = rope_inv_freq(128, 500000.0, RopeScaling{});
  auto raw = rope_inv_freq(128, 500000.0, std::nullopt);
  EXPECT_FLOAT_EQ(f[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(f[63].item<float>(), raw[63].item<float>() / 8);
  for (int i = 0; i < 64; ++i) {
    const double r = raw[i].item<double>(), wavelen = 2 * M_PI / r;
    if (wavelen >= 2048 && wavelen <= 8192) {
      const double smooth = (8192 / wavelen - 1) / 3;
      EXPECT_NEAR(f[i].item<double>(), (1 - smooth) * r / 8 + smooth * r, 1e-6 * r);
    }
  }
  EXPECT_NEAR(raw[1].item<double>(), std::pow(500000.0, -2.0 / 128), 1e-7);
}

TEST(Llama3Rope, RotatesAdjacentPairs) {
  // One head of size 4 at position 1: pair (x0, x1) turns by theta^0 = 1 rad, (x2, x3) by theta^-1/2.
  ModelArgs a;
  a.dim = 4, a.n_heads = 1, a.max_seq_len = 2, a.rope_theta = 100.0, a.rope_scaling = std::nullopt;
  auto [cos, sin] = rope_tables(a);
  auto x = torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({1, 1, 1, 4}).repeat({1, 2, 1, 1});  // (1, 2, 1, 4)
  auto y = apply_rope(x, cos, sin)[0][1][0];
  EXPECT_NEAR(y[0].item<double>(), std::cos(1.0), 1e-6);
  EXPECT_NEAR(y[1].item<double>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(y[2].item<double>(), -std::sin(0.1), 1e-6);
  EXPECT_NEAR(y[3].item<double>(), std::cos(0.1), 1e-6);
}

// The one-pass CPU rotation and its backward (the inverse rotation) against complex products in
// float64: fp32 and bf16, a non-contiguous input, and positions that do not start the table.
TEST(Llama3Rope, FusedRotationAndGradientMatchFloat64) {
  ModelArgs a;
  a.dim = 48, a.n_heads = 3, a.max_seq_len = 16, a.rope_theta = 500000.0;
  auto [cos, sin] = rope_tables(a);  // (16, 8)
  torch::manual_seed(0);
  const int64_t B = 2, T = 5, H = 3, hd = 16;
  auto x64 = torch::randn({B, H, T, hd}, torch::kFloat64).transpose(1, 2);  // (B, T, H, hd), not contiguous
  auto g64 = torch::randn({B, T, H, hd}, torch::kFloat64);
  const auto c = cos.slice(0, 3, 3 + T), s = sin.slice(0, 3, 3 + T);  // positions 3..7, as a CP shard
  auto rot = torch::complex(c.to(torch::kFloat64), s.to(torch::kFloat64)).view({1, T, 1, hd / 2});
  auto as_complex = [](const torch::Tensor& t) { return torch::view_as_complex(t.contiguous().view({B, T, H, hd / 2, 2})); };
  auto expected = torch::view_as_real(as_complex(x64) * rot).view({B, T, H, hd});
  auto expected_grad = torch::view_as_real(as_complex(g64) * rot.conj()).view({B, T, H, hd});
  for (auto [dtype, tol] : {std::pair{torch::kFloat32, 1e-6}, std::pair{torch::kBFloat16, 1e-2}}) {
    auto x = x64.to(dtype).detach().requires_grad_();
    auto y = apply_rope(x, c, s);
    EXPECT_EQ(y.scalar_type(), dtype);
    y.backward(g64.to(dtype));
    const double y_err = (y.to(torch::kFloat64) - expected).abs().max().item<double>();
    const double g_err = (x.grad().to(torch::kFloat64) - expected_grad).abs().max().item<double>();
    EXPECT_LT(y_err, tol * 4) << dtype;
    EXPECT_LT(g_err, tol * 4) << dtype;
  }
}

// The CUDA kernel against the CPU one: the same bits for values and gradients (both round the same
// fp32 products), in fp32, bf16 and fp64, from a non-contiguous input at positions 3..7.
TEST(Llama3Rope, CudaKernelEqualsCpuKernel) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "needs a GPU (none visible): the CUDA kernel is built, not run";
  ModelArgs a;
  a.dim = 256, a.n_heads = 4, a.max_seq_len = 64, a.rope_theta = 500000.0;
  auto [cos, sin] = rope_tables(a);  // (64, 32)
  torch::manual_seed(0);
  const int64_t B = 3, T = 37, H = 4, hd = 64;
  const auto c = cos.slice(0, 3, 3 + T), s = sin.slice(0, 3, 3 + T);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat64}) {
    auto x = torch::randn({B, H, T, hd}, dtype).transpose(1, 2);  // (B, T, H, hd), not contiguous
    auto g = torch::randn({B, T, H, hd}, dtype);
    auto x_cpu = x.detach().requires_grad_();
    auto x_gpu = x.detach().to(torch::kCUDA).requires_grad_();
    auto y_cpu = apply_rope(x_cpu, c, s);
    auto y_gpu = apply_rope(x_gpu, c.to(torch::kCUDA), s.to(torch::kCUDA));
    y_cpu.backward(g);
    y_gpu.backward(g.to(torch::kCUDA));
    EXPECT_TRUE(torch::equal(y_gpu.cpu(), y_cpu)) << dtype;
    EXPECT_TRUE(torch::equal(x_gpu.grad().cpu(), x_cpu.grad())) << dtype;
  }
}

}  // namespace
}  // namespace titan::llama3
