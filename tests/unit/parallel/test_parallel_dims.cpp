// TorchTitan's rules for parallelism degrees.
#include <gtest/gtest.h>

#include "parallel/parallel_dims.h"

namespace titan {
namespace {

TEST(ParallelDims, ShardDegreeMinusOneTakesLeftoverRanks) {
  auto d = ParallelDims::build(2, -1, 1, 2, 1, 1, 1, 8);
  EXPECT_EQ(d.dp_shard, 2);
  EXPECT_EQ(d.dp(), 4);
  EXPECT_EQ(ParallelDims::build(1, -1, 1, 1, 1, 1, 1, 1).dp_shard, 1);
}

TEST(ParallelDims, ProductMustEqualWorldSize) {
  try {
    ParallelDims::build(1, 2, 1, 2, 1, 1, 1, 8);
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "parallelism: invalid parallel dims: dp_replicate(1) * dp_shard(2) * cp(1) * tp(2) * pp(1) != WORLD_SIZE(8)");
  }
  EXPECT_THROW(ParallelDims::build(1, -1, 1, 3, 1, 1, 1, 8), std::invalid_argument);
  EXPECT_THROW(ParallelDims::build(0, -1, 1, 1, 1, 1, 1, 1), std::invalid_argument);
}

TEST(ParallelDims, ExpertDegrees) {
  EXPECT_THROW(ParallelDims::build(1, 4, 1, 2, 1, 2, 3, 8), std::invalid_argument);  // etp not 1 or tp
  EXPECT_NO_THROW(ParallelDims::build(1, 4, 1, 2, 1, 4, 2, 8));
  EXPECT_THROW(ParallelDims::build(1, 4, 1, 1, 1, 3, 1, 4), std::invalid_argument);
}

TEST(ParallelDims, MeshGroupsFollowTorchTitansOrder) {
  using V = std::vector<int64_t>;
  auto hsdp = ParallelDims::build(2, 2, 1, 1, 1, 1, 1, 4);  // mesh (dp_replicate=2, dp_shard=2)
  EXPECT_EQ(hsdp.group_ranks(1, {MeshDim::kDPShard}), (V{0, 1}));
  EXPECT_EQ(hsdp.group_ranks(1, {MeshDim::kDPReplicate}), (V{1, 3}));
  EXPECT_EQ(hsdp.group_ranks(2, {MeshDim::kDPReplicate, MeshDim::kDPShard}), (V{0, 1, 2, 3}));
  EXPECT_EQ(hsdp.coordinate(2, MeshDim::kDPReplicate), 1);
  EXPECT_EQ(hsdp.coordinate(2, MeshDim::kDPShard), 0);
  // 8 ranks as pp=2 x dp_shard=2 x tp=2: tp is innermost, pp outermost.
  auto d = ParallelDims::build(1, 2, 1, 2, 2, 1, 1, 8);
  EXPECT_EQ(d.group_ranks(5, {MeshDim::kTP}), (V{4, 5}));
  EXPECT_EQ(d.group_ranks(5, {MeshDim::kDPShard}), (V{5, 7}));
  EXPECT_EQ(d.group_ranks(5, {MeshDim::kPP}), (V{1, 5}));
  EXPECT_EQ(d.group_ranks(5, {MeshDim::kCP}), (V{5}));
  // Ranks 1 and 5 differ only in pp: they read the same data (dp_shard coordinate 0).
  EXPECT_EQ(d.dp_rank(5), 0);
  EXPECT_EQ(d.dp_rank(1), 0);
  EXPECT_EQ(d.dp_rank(7), 1);
  EXPECT_EQ(hsdp.dp_rank(2), 2);  // replica 1, shard 0
  EXPECT_EQ(hsdp.dp_rank(1), 1);
}

// TorchTitan's sparse mesh on 4 ranks (PARALLELISM.md 4.6): dp_shard 2 x tp 2 with ep 2.
TEST(ParallelDims, ExpertMeshGroupsAsTorchTitan) {
  const auto borrow = ParallelDims::build(1, 2, 1, 2, 1, 2, 1, 4);  // etp 1: ep borrows the tp ranks
  EXPECT_EQ(borrow.efsdp(), 2);
  EXPECT_EQ(borrow.group_ranks(1, {MeshDim::kEP}), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(borrow.group_ranks(3, {MeshDim::kEP}), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(borrow.group_ranks(1, {MeshDim::kEFSDP}), (std::vector<int64_t>{1, 3}));
  const auto etp = ParallelDims::build(1, 2, 1, 2, 1, 2, 2, 4);  // etp = tp
  EXPECT_EQ(etp.efsdp(), 1);
  EXPECT_EQ(etp.group_ranks(0, {MeshDim::kEP}), (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(etp.group_ranks(3, {MeshDim::kEP}), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(etp.group_ranks(2, {MeshDim::kETP}), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(etp.coordinate(2, MeshDim::kEP), 1);
  EXPECT_EQ(etp.coordinate(2, MeshDim::kETP), 0);
  // A (pp, dp_replicate) block repeats: HSDP 2 x 2 with ep 2 keeps ep inside each replica.
  const auto hsdp = ParallelDims::build(2, 2, 1, 1, 1, 2, 1, 4);
  EXPECT_EQ(hsdp.group_ranks(3, {MeshDim::kEP}), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(hsdp.group_ranks(3, {MeshDim::kDPReplicate}), (std::vector<int64_t>{1, 3}));
}

}  // namespace
}  // namespace titan
