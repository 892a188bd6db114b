// The MoE layer against hand-computed routing and a dense per-expert reference.
#include <gtest/gtest.h>

#include <cmath>

#include "models/common/torch_api.h"
#include "models/moe/moe.h"

namespace titan {
namespace {

// A layer with real, seeded weights (dim 8, hidden 16, 4 experts).
MoE seeded_moe(MoEArgs args, uint64_t seed = 3) {
  torch::manual_seed(seed);
  MoE moe(8, 16, args, torch::TensorOptions());
  torch::NoGradGuard no_grad;
  for (auto& p : moe->parameters()) p.normal_(0.0, 0.3);
  return moe;
}

MoEArgs four_experts(int64_t top_k) {
  MoEArgs a;
  a.num_experts = 4, a.top_k = top_k;
  return a;
}

torch::Tensor swiglu(const torch::Tensor& x, const torch::Tensor& w1, const torch::Tensor& w2, const torch::Tensor& w3) {
  return torch::matmul(torch::silu(torch::matmul(x, w1.t())) * torch::matmul(x, w3.t()), w2.t());
}

// Every expert on every token, masked to the chosen ones: no sorting, no grouping.
torch::Tensor dense_reference(MoE& moe, const torch::Tensor& x) {
  const auto& a = moe->args();
  const auto tokens = x.reshape({-1, x.size(-1)});
  auto scores = torch::matmul(tokens, moe->router->gate->weight.t());
  scores = a.score_func == "sigmoid" ? torch::sigmoid(scores) : torch::softmax(scores, -1);
  const auto chosen = std::get<1>(torch::topk(scores + moe->expert_bias, a.top_k, -1));
  auto gates = scores.gather(1, chosen);
  if (a.route_norm) gates = gates / (gates.sum(-1, true) + 1e-20);
  gates = gates * a.route_scale;
  const auto& sh = moe->shared_experts;
  auto out = swiglu(tokens, sh->w1->weight, sh->w2->weight, sh->w3->weight);
  for (int64_t slot = 0; slot < a.top_k; ++slot)
    for (int64_t e = 0; e < a.num_experts; ++e) {
      const auto mask = chosen.select(1, slot).eq(e).unsqueeze(1).to(x.scalar_type());
      const auto g = gates.narrow(1, slot, 1);
      const auto& ex = moe->experts;
      out = out + mask * (a.score_before_experts ? swiglu(tokens * g, ex->w1[e], ex->w2[e], ex->w3[e])
                                                 : g * swiglu(tokens, ex->w1[e], ex->w2[e], ex->w3[e]));
    }
  return out.view(x.sizes());
}

TEST(MoE, ParameterNamesAreTorchTitans) {
  MoE moe(8, 16, four_experts(1), torch::TensorOptions().device(torch::kMeta));
  std::vector<std::string> names;
  for (const auto& p : moe->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"experts.w1", "experts.w2", "experts.w3", "router.gate.weight",
                                              "shared_experts.w1.weight", "shared_experts.w2.weight",
                                              "shared_experts.w3.weight"}));
  std::vector<std::string> buffers;
  for (const auto& b : moe->named_buffers()) buffers.push_back(b.key());
  EXPECT_EQ(buffers, (std::vector<std::string>{"expert_bias", "tokens_per_expert"}));
  EXPECT_EQ(moe->experts->w1.sizes(), (std::vector<int64_t>{4, 16, 8}));
  EXPECT_EQ(moe->experts->w2.sizes(), (std::vector<int64_t>{4, 8, 16}));
}

TEST(MoE, RouterSigmoidGatesWithoutTheBias) {
  MoEArgs a = four_experts(2);
  Router router(2, a, torch::TensorOptions());
  torch::NoGradGuard no_grad;
  // logits of one token: (0, 1, 2, -1) for the 4 experts
  router->gate->weight.copy_(torch::tensor({0.f, 0.f, 1.f, 0.f, 2.f, 0.f, -1.f, 0.f}).view({4, 2}));
  const auto x = torch::tensor({1.f, 5.f}).view({1, 2});
  auto [gates, chosen] = router(x, torch::tensor({0.f, 0.f, 0.f, 0.f}));
  auto sorted = std::get<0>(chosen.sort(1));
  EXPECT_EQ(sorted[0][0].item<int64_t>(), 1);
  EXPECT_EQ(sorted[0][1].item<int64_t>(), 2);
  // A bias of +3 on expert 3 makes it chosen, but its gate stays sigmoid(-1).
  std::tie(gates, chosen) = router(x, torch::tensor({0.f, 0.f, 0.f, 3.f}));
  for (int64_t j = 0; j < 2; ++j) {
    const int64_t e = chosen[0][j].item<int64_t>();
    const double logit[] = {0, 1, 2, -1};
    EXPECT_TRUE(e == 2 || e == 3);
    EXPECT_NEAR(gates[0][j].item<double>(), 1 / (1 + std::exp(-logit[e])), 1e-6);
  }
}

TEST(MoE, RouterSoftmaxRouteNormAndScale) {
  MoEArgs a = four_experts(2);
  a.score_func = "softmax", a.route_norm = true, a.route_scale = 2.5;
  Router router(2, a, torch::TensorOptions());
  torch::NoGradGuard no_grad;
  router->gate->weight.copy_(torch::tensor({0.f, 0.f, 1.f, 0.f, 2.f, 0.f, -1.f, 0.f}).view({4, 2}));
  auto [gates, chosen] = router(torch::tensor({1.f, 5.f}).view({1, 2}), torch::Tensor());
  // experts 2 and 1: softmax probabilities e^2/Z and e^1/Z, normalised over the two, times 2.5
  const double p2 = std::exp(2.0) / (std::exp(2.0) + std::exp(1.0));
  const auto [g, order] = gates.sort(1, /*descending=*/true);
  EXPECT_NEAR(g[0][0].item<double>(), 2.5 * p2, 1e-6);
  EXPECT_NEAR(g[0][1].item<double>(), 2.5 * (1 - p2), 1e-6);
}

TEST(MoE, ForceLoadBalanceRoutesRoundRobin) {
  MoEArgs a = four_experts(2);
  a.force_load_balance = true;
  auto moe = seeded_moe(a);
  auto [gates, chosen] = moe->router(torch::randn({3, 8}), moe->expert_bias);
  EXPECT_TRUE(chosen.equal(torch::tensor({0, 1, 2, 3, 0, 1}, torch::kLong).view({3, 2})));
}

TEST(MoE, EqualsTheDenseReferenceAndItsGradients) {
  for (bool before : {true, false})
    for (int64_t k : {1, 2}) {
      MoEArgs a = four_experts(k);
      a.score_before_experts = before;
      if (!before) a.score_func = "softmax", a.route_norm = true;
      auto moe = seeded_moe(a);
      {
        torch::NoGradGuard no_grad;
        moe->expert_bias.copy_(torch::tensor({0.1f, -0.2f, 0.05f, 0.f}));
      }
      const auto x = torch::randn({2, 5, 8}).requires_grad_(true);
      const auto w = torch::randn({2, 5, 8});
      auto out = moe(x);
      auto ref = dense_reference(moe, x);
      EXPECT_TRUE(torch::allclose(out, ref, 1e-5, 1e-6)) << "score_before " << before << " top_k " << k;
      const auto params = moe->parameters();
      std::vector<torch::Tensor> inputs = {x};
      inputs.insert(inputs.end(), params.begin(), params.end());
      const auto g = torch::autograd::grad({(out * w).sum()}, inputs, {}, true, false, true);
      const auto g_ref = torch::autograd::grad({(ref * w).sum()}, inputs, {}, false, false, true);
      for (size_t i = 0; i < g.size(); ++i)
        EXPECT_TRUE(torch::allclose(g[i], g_ref[i], 1e-4, 1e-6)) << "input " << i << " score_before " << before << " top_k " << k;
    }
}

TEST(MoE, ExpertsThatReceiveNoTokenAndTheCounts) {
  MoEArgs a = four_experts(1);
  auto moe = seeded_moe(a);
  {
    torch::NoGradGuard no_grad;
    moe->expert_bias.copy_(torch::tensor({0.f, 100.f, 0.f, 0.f}));  // every token to expert 1
  }
  const auto x = torch::randn({1, 6, 8});
  EXPECT_TRUE(torch::allclose(moe(x), dense_reference(moe, x), 1e-5, 1e-6));
  EXPECT_TRUE(moe->tokens_per_expert.equal(torch::tensor({0.f, 6.f, 0.f, 0.f})));
  moe(x);
  EXPECT_TRUE(moe->tokens_per_expert.equal(torch::tensor({0.f, 12.f, 0.f, 0.f})));  // counts add up until the update
}

TEST(MoE, BiasUpdateBySignAroundTheMean) {
  auto bias = torch::tensor({0.f, 0.f, 0.f, 0.f});
  // mean 3: signs (+1, +1, +1, -1), their mean 0.5 -> coeff * (0.5, 0.5, 0.5, -1.5)
  update_expert_bias(bias, torch::tensor({1.f, 1.f, 1.f, 9.f}), 0.01);
  const float expected[] = {0.005f, 0.005f, 0.005f, -0.015f};
  for (int64_t e = 0; e < 4; ++e) EXPECT_NEAR(bias[e].item<double>(), expected[e], 1e-9);
}

}  // namespace
}  // namespace titan
