// Blocked causal attention against the full-matrix formula in float64, with grouped query heads,
// a length that does not split evenly into blocks, and gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "models/common/causal_attention.h"

namespace titan {
namespace {

// softmax(q k / sqrt(hd) + causal) v over the whole T x T matrix.
torch::Tensor full_matrix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t T = q.size(3), hd = q.size(4);
  auto scores = torch::matmul(q, k.unsqueeze(2)) / std::sqrt(static_cast<double>(hd));  // (B, KV, rep, T, T)
  auto masked = torch::ones({T, T}, torch::kBool).triu(1);
  scores = scores.masked_fill(masked, -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), v.unsqueeze(2));  // (B, KV, rep, T, hd)
}

TEST(CausalAttention, BlocksEqualTheFullMatrixInFloat64) {
  torch::manual_seed(5);
  const int64_t B = 2, KV = 2, rep = 3, T = 202, hd = 8;  // 4 blocks of 51, 51, 51, 49
  ASSERT_EQ(attention_query_blocks(T), 4);
  auto q = torch::randn({B, KV, rep, T, hd}).requires_grad_(true);
  auto k = torch::randn({B, KV, hd, T}).requires_grad_(true);
  auto v = torch::randn({B, KV, T, hd}).requires_grad_(true);
  auto g = torch::randn({B, KV, rep, T, hd});
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
  // The first query sees only the first key: its output is v's first row for every head.
  EXPECT_TRUE(torch::allclose(out.select(3, 0), v.select(2, 0).unsqueeze(2).expand({B, KV, rep, hd})));
}

}  // namespace
}  // namespace titan
