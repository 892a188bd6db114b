// The tensor-parallel pieces over two real ranks against single-process results every rank
// computes from the same seeded full tensors: the sequence all-gather and reduce-scatter and
// their backwards, the vocabulary gather, vocabulary-parallel cross entropy (loss and logit
// gradients, ignored labels included) and the vocabulary-sharded embedding lookup.
#include <gtest/gtest.h>

#include "parallel/autograd_collectives.h"
#include "parallel/tensor_parallel.h"
#include "parallel/vocab_parallel_loss.h"
#include "tests/unit/parallel/multi_rank.h"

namespace titan {
namespace {

using testing::run_as_ranks;
using testing::test_rank;

void expect_close(const torch::Tensor& a, const torch::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-5) << what;
}

void sequence_collectives(int rank) {
  auto group = testing::world_group(rank);
  torch::manual_seed(1);
  const auto full = torch::randn({2, 6, 3});                   // (B, T, D): what one process holds
  const auto w = torch::randn({2, 2, 6, 3});                   // per rank, the upstream gradient of its output
  auto x = full.narrow(1, 3 * rank, 3).clone().requires_grad_(true);  // this rank's (B, T/2, D)
  auto y = gather_sequence(x, *group);
  expect_close(y, full, "gather_sequence forward");
  (y * w[rank]).sum().backward();  // d(sum over ranks of loss_r)/dx_r = (w_0 + w_1) on this rank's slice
  expect_close(x.grad(), (w[0] + w[1]).narrow(1, 3 * rank, 3), "gather_sequence backward");

  const auto partial = torch::randn({2, 2, 6, 3});  // per rank: a partial sum over the full sequence
  auto p = partial[rank].clone().requires_grad_(true);
  auto s = reduce_scatter_sequence(p, *group);
  expect_close(s, (partial[0] + partial[1]).narrow(1, 3 * rank, 3), "reduce_scatter_sequence forward");
  const auto v = torch::randn({2, 2, 3, 3});  // per rank, the upstream gradient of its slice
  (s * v[rank]).sum().backward();
  expect_close(p.grad(), torch::cat({v[0], v[1]}, 1), "reduce_scatter_sequence backward");

  const auto logits = torch::randn({2, 4, 10});
  auto l = logits.narrow(2, 5 * rank, 5).clone().requires_grad_(true);
  auto g = gather_last_dim(l, *group);
  expect_close(g, logits, "gather_last_dim forward");
  const auto u = torch::randn({2, 4, 10});
  (g * u).sum().backward();
  expect_close(l.grad(), u.narrow(2, 5 * rank, 5), "gather_last_dim backward");
}

void vocab_parallel(int rank) {
  auto group = testing::world_group(rank);
  torch::manual_seed(2);
  const int64_t N = 12, V = 10, half = V / 2;
  const auto logits = torch::randn({N, V}) * 3;
  auto labels = torch::randint(0, V, {N}, torch::kLong);
  labels[3] = -100;  // ignored
  auto full = logits.clone().requires_grad_(true);
  auto expected = torch::nn::functional::cross_entropy(
      full, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(-100));
  expected.backward();
  auto local = logits.narrow(1, half * rank, half).clone().requires_grad_(true);
  auto loss = vocab_parallel_cross_entropy_sum(local, labels, half * rank, *group);
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-4);
  loss.backward();
  expect_close(local.grad(), full.grad().narrow(1, half * rank, half), "vocab-parallel cross entropy gradient");

  // The embedding: this rank's vocabulary rows, a masked lookup, then this rank's sequence slice.
  const auto table = torch::randn({V, 4});
  const auto tokens = torch::randint(0, V, {2, 6}, torch::kLong);
  TensorParallel tp(*group, /*loss_parallel=*/true);
  auto rows = table.narrow(0, half * rank, half).clone().requires_grad_(true);
  auto embedded = tp.embed(tokens, rows);  // (2, 3, 4)
  auto whole = table.clone().requires_grad_(true);
  auto reference = at::embedding(whole, tokens);
  expect_close(embedded, reference.narrow(1, 3 * rank, 3), "vocab-parallel embedding forward");
  const auto w = torch::randn({2, 2, 3, 4});
  (embedded * w[rank]).sum().backward();
  (reference * torch::cat({w[0], w[1]}, 1)).sum().backward();
  expect_close(rows.grad(), whole.grad().narrow(0, half * rank, half), "vocab-parallel embedding backward");
}

TEST(TensorParallelTwoRanks, SequenceCollectivesAndTheirBackwards) {
  if (auto rank = test_rank()) return sequence_collectives(*rank);
  EXPECT_TRUE(run_as_ranks(2));
}

TEST(TensorParallelTwoRanks, VocabParallelLossAndEmbedding) {
  if (auto rank = test_rank()) return vocab_parallel(*rank);
  EXPECT_TRUE(run_as_ranks(2));
}

}  // namespace
}  // namespace titan
