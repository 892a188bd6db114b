// Pieces and owners of placements against hand-computed offsets (PARALLELISM.md §1.5): FSDP's
// uneven rows, a colwise and a rowwise TP weight under FSDP, a TP-replicated norm, HSDP replicas.
#include <gtest/gtest.h>

#include "parallel/placement.h"

namespace titan {
namespace {

using V = std::vector<int64_t>;
const Split kFsdp{{MeshDim::kDPShard, MeshDim::kCP}, 0, /*uneven=*/true};

TEST(Placement, FsdpRowsAreTorchChunks) {
  const auto dims = ParallelDims::build(1, 2, 1, 1, 1, 1, 1, 2);
  const Placement p{{5, 3}, {kFsdp}};
  EXPECT_EQ(p.piece(dims, 0).offsets, (V{0, 0}));
  EXPECT_EQ(p.piece(dims, 0).sizes, (V{3, 3}));
  EXPECT_EQ(p.piece(dims, 1).offsets, (V{3, 0}));
  EXPECT_EQ(p.piece(dims, 1).sizes, (V{2, 3}));
  EXPECT_TRUE(p.owned_by(dims, 0) && p.owned_by(dims, 1));  // distinct pieces: each its own owner
  const Placement tiny{{1}, {kFsdp}};                        // fewer rows than ranks: an empty piece
  EXPECT_EQ(tiny.piece(dims, 1).sizes, (V{0}));
}

TEST(Placement, TensorParallelThenFsdp) {
  const auto dims = ParallelDims::build(1, 2, 1, 2, 1, 1, 1, 4);  // rank = dp_shard * 2 + tp
  const Placement colwise{{8, 4}, {{{MeshDim::kTP}, 0, false}, kFsdp}};
  // tp t holds rows [4t, 4t + 4); dp_shard f of those [2f, 2f + 2).
  EXPECT_EQ(colwise.piece(dims, 1).offsets, (V{4, 0}));  // tp 1, f 0
  EXPECT_EQ(colwise.piece(dims, 2).offsets, (V{2, 0}));  // tp 0, f 1
  EXPECT_EQ(colwise.piece(dims, 3).sizes, (V{2, 4}));
  const Placement rowwise{{6, 4}, {{{MeshDim::kTP}, 1, false}, kFsdp}};
  EXPECT_EQ(rowwise.piece(dims, 3).offsets, (V{3, 2}));  // rows chunk(6, 2)[1], columns of tp 1
  EXPECT_EQ(rowwise.piece(dims, 3).sizes, (V{3, 2}));
  const Placement norm{{4}, {kFsdp}};  // replicated over tp: tp 0 saves it, and counts it once
  EXPECT_TRUE(norm.owned_by(dims, 2));
  EXPECT_FALSE(norm.owned_by(dims, 1));
  EXPECT_EQ(norm.piece(dims, 1).offsets, norm.piece(dims, 0).offsets);
  const Placement odd{{6, 3}, {{{MeshDim::kTP}, 1, false}}};
  EXPECT_THROW(odd.piece(dims, 0), std::invalid_argument);
}

// Routed experts under ep: experts over ep, each ep rank the one owner of its experts; with etp the
// hidden dim over etp; the ranks of one ep coordinate in another replica hold copies.
TEST(Placement, ExpertsOverEpAndEtp) {
  const auto dims = ParallelDims::build(1, 2, 1, 2, 1, 2, 2, 4);  // ep = dp_shard, etp = tp
  const Placement w1{{8, 6, 4}, {{{MeshDim::kEP}, 0, false}, {{MeshDim::kETP}, 1, false}}};
  EXPECT_EQ(w1.piece(dims, 3).offsets, (V{4, 3, 0}));  // ep 1, etp 1
  EXPECT_EQ(w1.piece(dims, 3).sizes, (V{4, 3, 4}));
  for (int64_t r = 0; r < 4; ++r) EXPECT_TRUE(w1.owned_by(dims, r)) << r;
  EXPECT_EQ(w1.describe(), "(8, 6, 4) dim 0 over ep dim 1 over etp");
  const auto hsdp = ParallelDims::build(2, 2, 1, 1, 1, 2, 1, 4);
  const Placement experts{{8, 6, 4}, {{{MeshDim::kEP}, 0, false}}};
  EXPECT_TRUE(experts.owned_by(hsdp, 1));
  EXPECT_FALSE(experts.owned_by(hsdp, 3));  // replica 1
  EXPECT_EQ(experts.piece(hsdp, 3).offsets, (V{4, 0, 0}));
}

// FSDP4 + EP2: efsdp 2 cuts each ep rank's experts further (here on dim 1, unevenly as torch.chunk);
// rank l = efsdp * 2 + ep, every piece its own owner.
TEST(Placement, ExpertsOverEpThenEfsdp) {
  const auto dims = ParallelDims::build(1, 4, 1, 1, 1, 2, 1, 4);
  const Placement w1{{2, 5, 4}, {{{MeshDim::kEP}, 0, false}, {{MeshDim::kEFSDP}, 1, true}}};
  EXPECT_EQ(w1.piece(dims, 1).offsets, (V{1, 0, 0}));  // ep 1, efsdp 0
  EXPECT_EQ(w1.piece(dims, 1).sizes, (V{1, 3, 4}));
  EXPECT_EQ(w1.piece(dims, 2).offsets, (V{0, 3, 0}));  // ep 0, efsdp 1
  EXPECT_EQ(w1.piece(dims, 2).sizes, (V{1, 2, 4}));
  for (int64_t r = 0; r < 4; ++r) EXPECT_TRUE(w1.owned_by(dims, r)) << r;
  EXPECT_EQ(w1.describe(), "(2, 5, 4) dim 0 over ep dim 1 over efsdp (uneven)");
}

TEST(Placement, ReplicasAreOwnedByTheFirst) {
  const auto hsdp = ParallelDims::build(2, 2, 1, 1, 1, 1, 1, 4);  // rank = replica * 2 + shard
  const Placement p{{4, 2}, {kFsdp}};
  EXPECT_TRUE(p.owned_by(hsdp, 1));
  EXPECT_FALSE(p.owned_by(hsdp, 3));
  EXPECT_EQ(p.piece(hsdp, 3).offsets, p.piece(hsdp, 1).offsets);
  const Placement ddp{{4, 2}, {}};
  const auto replicas = ParallelDims::build(2, 1, 1, 1, 1, 1, 1, 2);
  EXPECT_TRUE(ddp.owned_by(replicas, 0));
  EXPECT_FALSE(ddp.owned_by(replicas, 1));
  EXPECT_EQ(p.describe(), "(4, 2) dim 0 over dp_shard x cp (uneven)");
}

TEST(Placement, PipelineStagesAreOwnedAtTheirPpRank) {
  const auto dims = ParallelDims::build(1, 2, 1, 1, 2, 1, 1, 4);  // rank = pp * 2 + dp_shard
  Placement p{{4, 2}, {kFsdp}};
  p.pp_rank = 1;
  EXPECT_FALSE(p.owned_by(dims, 0));  // pp 0 does not hold the stage
  EXPECT_TRUE(p.owned_by(dims, 2) && p.owned_by(dims, 3));
  EXPECT_EQ(p.piece(dims, 3).offsets, (V{2, 0}));
  EXPECT_EQ(p.describe(), "(4, 2) dim 0 over dp_shard x cp (uneven) on pp rank 1");
}

}  // namespace
}  // namespace titan
