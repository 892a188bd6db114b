// Expert parallelism's dispatch and combine over 2 and 4 real ranks: every rank's rows, grouped by
// global expert (some experts receiving none, one rank sending nothing), come back from the ranks
// holding their experts as each expert's function of them, and the gradients come back too; the
// token split of a tensor-parallel group; an uneven split is an error.
#include <gtest/gtest.h>

#include "parallel/expert_parallel.h"
#include "tests/unit/parallel/multi_rank.h"

namespace titan {
namespace {

using testing::run_as_ranks;
using testing::test_rank;

constexpr int64_t kExperts = 8, kDim = 3;

// Expert e scales its rows by e + 1 and adds e: a different function per expert.
torch::Tensor expert_function(const torch::Tensor& rows, int64_t e) { return rows * static_cast<double>(e + 1) + static_cast<double>(e); }

void dispatch_and_combine(int rank) {
  auto group = testing::world_group(rank);
  const int64_t n = group->size(), per_rank = kExperts / n;
  ExpertParallel ep(*group, 1, 0);
  torch::manual_seed(10 + rank);
  // counts per expert: rank 1 sends nothing; rank 0 gives expert 1 no row; others random (0..3)
  auto counts_t = torch::randint(0, 4, {kExperts}, torch::kLong);
  if (rank == 0) counts_t[1] = 0;
  if (rank == 1) counts_t.zero_();
  const std::vector<int64_t> counts(counts_t.data_ptr<int64_t>(), counts_t.data_ptr<int64_t>() + kExperts);
  const int64_t m = counts_t.sum().item<int64_t>();
  auto rows = torch::randn({m, kDim}).requires_grad_(true);
  int64_t calls = 0;
  auto out = ep.run_experts(rows, counts, [&](const torch::Tensor& local_rows, const std::vector<int64_t>& local_counts) {
    ++calls;
    EXPECT_EQ(static_cast<int64_t>(local_counts.size()), per_rank);
    std::vector<torch::Tensor> outs;
    int64_t begin = 0;
    for (int64_t j = 0; j < per_rank; ++j) {
      outs.push_back(expert_function(local_rows.narrow(0, begin, local_counts[static_cast<size_t>(j)]), rank * per_rank + j));
      begin += local_counts[static_cast<size_t>(j)];
    }
    EXPECT_EQ(begin, local_rows.size(0));
    return torch::cat(outs);
  });
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(out.sizes(), rows.sizes());
  std::vector<torch::Tensor> expected;
  int64_t begin = 0;
  for (int64_t e = 0; e < kExperts; ++e) {
    expected.push_back(expert_function(rows.detach().narrow(0, begin, counts[static_cast<size_t>(e)]), e));
    begin += counts[static_cast<size_t>(e)];
  }
  EXPECT_TRUE(torch::allclose(out, torch::cat(expected), 1e-6, 1e-6)) << "rank " << rank;
  const auto w = torch::randn({m, kDim});
  (out * w).sum().backward();
  std::vector<torch::Tensor> grad;
  begin = 0;
  for (int64_t e = 0; e < kExperts; ++e) {
    grad.push_back(w.narrow(0, begin, counts[static_cast<size_t>(e)]) * static_cast<double>(e + 1));
    begin += counts[static_cast<size_t>(e)];
  }
  EXPECT_TRUE(torch::allclose(rows.grad(), torch::cat(grad), 1e-6, 1e-6)) << "rank " << rank;
}

TEST(ExpertParallelRanks, TwoRanksDispatchAndCombine) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(2));
    return;
  }
  dispatch_and_combine(*test_rank());
}

TEST(ExpertParallelRanks, FourRanksDispatchAndCombine) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(4));
    return;
  }
  dispatch_and_combine(*test_rank());
}

TEST(ExpertParallel, TensorParallelRanksSplitTheTokens) {
  auto group = std::make_unique<ProcessGroup>("one", std::vector<int64_t>{0}, 0, c10::intrusive_ptr<c10d::Store>(),
                                              std::make_shared<std::chrono::milliseconds>(1000));
  EXPECT_EQ(ExpertParallel(*group, 2, 1).token_range(128), (std::pair<int64_t, int64_t>{64, 64}));
  EXPECT_EQ(ExpertParallel(*group, 1, 0).token_range(7), (std::pair<int64_t, int64_t>{0, 7}));
  EXPECT_THROW(ExpertParallel(*group, 2, 0).token_range(7), std::invalid_argument);
}

}  // namespace
}  // namespace titan
