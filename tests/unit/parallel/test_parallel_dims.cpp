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

}  // namespace
}  // namespace titan
