#include "models/moe/moe.h"

#include <stdexcept>

#include "models/common/matmul.h"
#include "models/common/backward_phase.h"
#include "models/common/swiglu.h"

namespace titan {

RouterImpl::RouterImpl(int64_t dim, const MoEArgs& args, const torch::TensorOptions& options) : args_(args) {
  gate = register_module("gate", Linear(dim, args.num_experts, options));
}

std::pair<torch::Tensor, torch::Tensor> RouterImpl::forward(const torch::Tensor& x, const torch::Tensor& expert_bias) {
  auto logits = apply_linear(x, gate->weight).to(torch::kFloat32);  // (N, E)
  auto scores = args_.score_func == "sigmoid" ? torch::sigmoid(logits) : torch::softmax(logits, 1);
  torch::Tensor experts;  // (N, k)
  if (args_.force_load_balance) {  // round-robin over this rank's token order
    experts = torch::arange(x.size(0) * args_.top_k, torch::TensorOptions().dtype(torch::kLong).device(x.device()))
                  .view({x.size(0), args_.top_k}) % args_.num_experts;
  } else {
    const auto for_choice = expert_bias.defined() ? scores + expert_bias : scores;
    experts = std::get<1>(torch::topk(for_choice, args_.top_k, /*dim=*/-1, /*largest=*/true, /*sorted=*/false));
  }
  auto top_scores = scores.gather(1, experts);  // (N, k): the bias chooses but does not scale
  if (args_.route_norm) top_scores = top_scores / (top_scores.sum(-1, true) + 1e-20);
  return {top_scores * args_.route_scale, experts};
}

GroupedExpertsImpl::GroupedExpertsImpl(int64_t dim, int64_t hidden_dim, int64_t num_experts,
                                       const torch::TensorOptions& options) {
  add_weight("w1", w1, {num_experts, hidden_dim, dim}, options);
  add_weight("w2", w2, {num_experts, dim, hidden_dim}, options);
  add_weight("w3", w3, {num_experts, hidden_dim, dim}, options);
}

torch::Tensor GroupedExpertsImpl::forward(const torch::Tensor& x, const std::vector<int64_t>& counts) {
  std::vector<torch::Tensor> outs;  // one (counts[e], dim) block per expert
  int64_t row = 0;
  for (size_t e = 0; e < counts.size(); ++e) {
    const auto rows = x.narrow(0, row, counts[e]);
    const auto i = static_cast<int64_t>(e);
    outs.push_back(apply_linear(swiglu(apply_linear(rows, w1[i]), apply_linear(rows, w3[i])), w2[i]));
    row += counts[e];
  }
  return torch::cat(outs);
}

MoEImpl::MoEImpl(int64_t dim, int64_t hidden_dim, const MoEArgs& args, const torch::TensorOptions& options) : args_(args) {
  args_.validate();
  experts = register_module("experts", GroupedExperts(dim, hidden_dim, args.num_experts, options));
  router = register_module("router", Router(dim, args, options));
  if (args.num_shared_experts > 0)
    shared_experts = register_module("shared_experts", FeedForward(dim, hidden_dim * args.num_shared_experts, options));
  const auto fp32 = torch::TensorOptions().dtype(torch::kFloat32);  // real whatever `options` says, as RoPE tables
  if (args.load_balance_coeff) expert_bias = register_buffer("expert_bias", torch::zeros({args.num_experts}, fp32));
  tokens_per_expert = register_buffer("tokens_per_expert", torch::zeros({args.num_experts}, fp32));
}

torch::Tensor MoEImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), D = x.size(2), k = args_.top_k, N = B * T;
  const auto tokens = x.reshape({N, D});
  auto [top_scores, chosen] = router(tokens, expert_bias);  // (N, k) fp32, (N, k) int64
  const auto counts = torch::bincount(chosen.view({-1}), {}, args_.num_experts);  // (E,) int64
  if (!recomputing() && !evaluating()) {
    torch::NoGradGuard no_grad;
    tokens_per_expert.add_(counts.to(tokens_per_expert.device(), torch::kFloat32));
  }
  // Token slots (token, choice) grouped by expert, in token order within an expert: this rank's
  // tokens' slots (under expert parallelism a tensor-parallel group may share the tokens).
  const auto [first, count] = ep ? ep->token_range(N) : std::pair<int64_t, int64_t>{0, N};
  const auto mine = chosen.narrow(0, first, count).reshape({-1});                         // (count k,)
  const auto order = torch::argsort(mine, /*stable=*/true) + first * k;                 // slot indices
  auto routed = tokens.index_select(0, torch::floor_divide(order, k));                  // (count k, D)
  if (args_.score_before_experts)
    routed = (routed.to(torch::kFloat32) * top_scores.view({-1}).index_select(0, order).unsqueeze(1)).to(x.scalar_type());
  const auto routed_counts = (first == 0 && count == N ? counts : torch::bincount(mine, {}, args_.num_experts)).cpu();
  const std::vector<int64_t> split(routed_counts.data_ptr<int64_t>(), routed_counts.data_ptr<int64_t>() + args_.num_experts);
  const auto routed_out = ep ? ep->run_experts(routed, split, [this](const torch::Tensor& rows, const std::vector<int64_t>& c) {
    return experts(rows, c);
  })
                             : experts(routed, split);  // (count k, D)
  const auto shared = shared_experts ? shared_experts(tokens) : torch::Tensor();  // (N, D)
  // Back to slot order: (N, k, D)
  const auto slots = torch::zeros({N * k, D}, routed_out.options()).index_copy(0, order, routed_out).view({N, k, D});
  auto out = args_.score_before_experts
                 ? slots.sum(1)
                 : torch::bmm(top_scores.view({N, 1, k}), slots.to(torch::kFloat32)).to(x.scalar_type()).squeeze(1);  // (N, D)
  if (shared.defined()) out = shared + out;
  return out.view({B, T, D});
}

void update_expert_bias(const torch::Tensor& expert_bias, const torch::Tensor& tokens_per_expert, double coeff) {
  torch::NoGradGuard no_grad;
  auto delta = coeff * torch::sign(tokens_per_expert.mean() - tokens_per_expert);  // (E,)
  expert_bias.add_(delta - delta.mean());
}

}  // namespace titan
