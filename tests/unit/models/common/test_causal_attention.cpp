// The model's attention core against the full-matrix formula in float64, with grouped query heads
// (query head h reads kv head h / rep, as repeat_interleave), a length of no round size, and gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "models/common/causal_attention.h"

namespace titan {
namespace {

// softmax(q k^T / sqrt(hd) + causal mask) v over the whole T x T matrix, kv heads repeated.
torch::Tensor full_matrix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t rep = q.size(1) / k.size(1), T = q.size(2), hd = q.size(3);
  auto kk = k.repeat_interleave(rep, 1), vv = v.repeat_interleave(rep, 1);                   // (B, H, T, hd)
  auto scores = torch::matmul(q, kk.transpose(2, 3)) / std::sqrt(static_cast<double>(hd));  // (B, H, T, T)
  scores = scores.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), vv);  // (B, H, T, hd)
}

TEST(CausalAttention, EqualsTheFullMatrixInFloat64WithGroupedHeads) {
  torch::manual_seed(5);
  const int64_t B = 2, KV = 2, rep = 3, T = 202, hd = 8;
  auto q = torch::randn({B, KV * rep, T, hd}).requires_grad_(true);
  auto k = torch::randn({B, KV, T, hd}).requires_grad_(true);
  auto v = torch::randn({B, KV, T, hd}).requires_grad_(true);
  auto g = torch::randn({B, KV * rep, T, hd});
  auto out = causal_attention(q, k, v);
  out.backward(g);

  auto q64 = q.detach().to(torch::kFloat64).requires_grad_(true);
  auto k64 = k.detach().to(torch::kFloat64).requires_grad_(true);
  auto v64 = v.detach().to(torch::kFloat64).requires_grad_(true);
  auto expected = full_matrix_attention(q64, k64, v64);
  expected.backward(g.to(torch::kFloat64));
  auto max_diff = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b).abs().max().item<double>();
  };
  EXPECT_LT(max_diff(out, expected), 1e-5);
  EXPECT_LT(max_diff(q.grad(), q64.grad()), 1e-5);
  EXPECT_LT(max_diff(k.grad(), k64.grad()), 1e-5);
  EXPECT_LT(max_diff(v.grad(), v64.grad()), 1e-5);
  // The first query sees only the first key: its output is v's first row, kv head h / rep.
  EXPECT_TRUE(torch::allclose(out.select(2, 0), v.select(2, 0).repeat_interleave(rep, 1)));
}

}  // namespace
}  // namespace titan
