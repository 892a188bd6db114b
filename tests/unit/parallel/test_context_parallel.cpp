// Context-parallel attention over real ranks against one process's causal attention on the whole
// sequence (libtorch's SDPA): each rank holds its positions of seeded full q, k, v; the outputs
// and the gradients of q, k and v (through the gathers or the ring, backward included) must be
// the full results' rows at those positions within 1e-6 (relative to the largest), for both rotate
// methods, cp 2 and cp 4, head-tail and contiguous chunks, both block kernels, GQA; on 128-row
// blocks, against float64, within 2% in bf16 and 2e-6 in fp32.
#include <gtest/gtest.h>

#include <algorithm>

#include "parallel/context_parallel.h"
#include "tests/unit/parallel/multi_rank.h"

namespace titan {
namespace {

using testing::run_as_ranks;
using testing::test_rank;

TEST(ContextParallel, HeadTailPositions) {
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 2, 0, true), torch::tensor({0, 1, 6, 7}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 2, 1, true), torch::tensor({2, 3, 4, 5}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(8, 2, 1, false), torch::tensor({4, 5, 6, 7}, torch::kLong)));
  EXPECT_TRUE(torch::equal(context_parallel_positions(16, 4, 3, true), torch::tensor({6, 7, 8, 9}, torch::kLong)));
}

void expect_rows(const torch::Tensor& local, const torch::Tensor& full, const torch::Tensor& positions, const std::string& what) {
  const auto expected = full.index_select(2, positions);  // (B, heads, T/cp, hd)
  ASSERT_EQ(local.sizes(), expected.sizes()) << what;
  const double scale = std::max(1.0, expected.abs().max().item<double>());  // fp32: 1e-6 relative to the largest value
  EXPECT_LT((local - expected).abs().max().item<double>(), 1e-6 * scale) << what;
}

void exact_over_ranks(ProcessGroup& group, const std::string& method, bool head_tail, bool formula) {
  const int64_t cp = group.size(), rank = group.rank(), T = 16;
  torch::manual_seed(5);
  const auto q = torch::randn({2, 4, T, 8}), k = torch::randn({2, 2, T, 8}), v = torch::randn({2, 2, T, 8});  // GQA 4:2
  const auto w = torch::randn({2, 4, T, 8});  // the upstream gradient of the output
  auto fq = q.clone().requires_grad_(true), fk = k.clone().requires_grad_(true), fv = v.clone().requires_grad_(true);
  auto full = at::scaled_dot_product_attention(fq, fk, fv, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/true);
  (full * w).sum().backward();

  ContextParallel context(group, T, head_tail, method, formula);
  const auto pos = context_parallel_positions(T, cp, rank, head_tail);
  auto mine = [&](const torch::Tensor& t) { return t.index_select(2, pos).clone().requires_grad_(true); };
  auto lq = mine(q), lk = mine(k), lv = mine(v);
  auto out = context.attention(lq, lk, lv);
  (out * w.index_select(2, pos)).sum().backward();  // summed over ranks: the full loss
  const std::string what = method + (head_tail ? " head-tail" : " contiguous") + (formula ? " formula" : " flash") + " cp " +
                           std::to_string(cp) + " rank " + std::to_string(rank);
  expect_rows(out.detach(), full.detach(), pos, what + " output");
  expect_rows(lq.grad(), fq.grad(), pos, what + " dq");
  expect_rows(lk.grad(), fk.grad(), pos, what + " dk");
  expect_rows(lv.grad(), fv.grad(), pos, what + " dv");
}

// bf16 and fp32 with blocks of 128 rows and more (head-tail halves included), where the CPU flash
// path's backward is our kernel on CPUs with AVX-512 or AVX2 (flash_attention_cpu.h):
// outputs and gradients within 2% (bf16) or 2e-6 (fp32) of the largest of float64's on the same inputs.
void blocks_over_ranks(ProcessGroup& group, const std::string& method, bool head_tail, torch::ScalarType dtype) {
  const int64_t cp = group.size(), rank = group.rank(), T = 256 * cp;
  torch::manual_seed(6);
  auto as_dtype = [&](const torch::Tensor& t) { return t.to(dtype); };
  const auto q = as_dtype(torch::randn({1, 4, T, 16})), k = as_dtype(torch::randn({1, 2, T, 16})),
             v = as_dtype(torch::randn({1, 2, T, 16})), w = as_dtype(torch::randn({1, 4, T, 16}));  // GQA 4:2
  auto fq = q.to(torch::kFloat64).requires_grad_(true), fk = k.to(torch::kFloat64).requires_grad_(true),
       fv = v.to(torch::kFloat64).requires_grad_(true);
  auto full =
      at::scaled_dot_product_attention(fq, fk, fv, {}, 0.0, /*is_causal=*/true, std::nullopt, /*enable_gqa=*/true);
  (full * w.to(torch::kFloat64)).sum().backward();

  ContextParallel context(group, T, head_tail, method, /*formula_blocks=*/false);
  const auto pos = context_parallel_positions(T, cp, rank, head_tail);
  auto mine = [&](const torch::Tensor& t) { return t.index_select(2, pos).clone().requires_grad_(true); };
  auto lq = mine(q), lk = mine(k), lv = mine(v);
  auto out = context.attention(lq, lk, lv);
  (out * w.index_select(2, pos)).sum().backward();
  const std::string what = method + (head_tail ? " head-tail " : " contiguous ") + c10::toString(dtype) + " cp " +
                           std::to_string(cp) + " rank " + std::to_string(rank);
  const double tolerance = dtype == torch::kBFloat16 ? 0.02 : 2e-6;
  auto near = [&](const torch::Tensor& local, const torch::Tensor& exact, const std::string& name) {
    const auto expected = exact.index_select(2, pos);  // (1, heads, T/cp, 16)
    ASSERT_EQ(local.scalar_type(), dtype) << what << name;
    ASSERT_EQ(local.sizes(), expected.sizes()) << what << name;
    const double err = (local.to(torch::kFloat64) - expected).abs().max().item<double>();
    EXPECT_LT(err, tolerance * expected.abs().max().item<double>()) << what << name;
  };
  near(out.detach(), full.detach(), " output");
  near(lq.grad(), fq.grad(), " dq");
  near(lk.grad(), fk.grad(), " dk");
  near(lv.grad(), fv.grad(), " dv");
}

// Every rank runs both rotate methods, with and without load balancing, with the CPU flash kernel
// and with the formula other devices use, and on 128-row blocks in bf16 and fp32.
void all_variants(int rank) {
  auto group = testing::world_group(rank);  // once per process: a second group would meet under the same keys
  for (const char* method : {"allgather", "alltoall"})
    for (bool head_tail : {true, false}) {
      for (bool formula : {false, true}) exact_over_ranks(*group, method, head_tail, formula);
      for (const auto dtype : {torch::kBFloat16, torch::kFloat32}) blocks_over_ranks(*group, method, head_tail, dtype);
    }
}

TEST(ContextParallelRanks, TwoRanksAreExact) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(2));
    return;
  }
  all_variants(*test_rank());
}

TEST(ContextParallelRanks, FourRanksAreExact) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(4));
    return;
  }
  all_variants(*test_rank());
}

}  // namespace
}  // namespace titan
