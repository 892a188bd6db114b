// Layout-independent initialisation over four real ranks: under FSDP2 x TP2, under PP2 x TP2
// (each rank holding its pipeline stage's part) and under FSDP4 + EP2 (the routed experts sharded
// over efsdp on dim 0, or on dim 1 when there are only 2 experts), every rank's pieces are bit for
// bit the corresponding slices of the whole model one process initialises from the same seed, and
// the whole parameters gathered back for an export (over fsdp, tp, efsdp, ep and pp) are the
// whole model's.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <map>

#include "models/common/parameter_seed.h"
#include "models/llama3/parallelize.h"
#include "parallel/collectives.h"
#include "parallel/parallelized_model.h"
#include "tests/unit/parallel/multi_rank.h"
#include "tests/unit/parallel/tiny_model.h"

namespace titan {
namespace {

using testing::run_as_ranks;
using testing::test_rank;

constexpr uint64_t kSeed = 11;

// `expected` (FQN -> Placement::describe()): placements checked by hand.
void pieces_equal_the_whole_model(int rank, const ParallelDims& dims,
                                  const llama3::ModelArgs& args = testing::tiny_args(),
                                  const std::map<std::string, std::string>& expected = {}) {
  torch::set_num_threads(1);
  llama3::Transformer whole(args);
  whole->init_weights(kSeed);
  std::map<std::string, torch::Tensor> reference;
  for (const auto& p : whole->named_parameters()) reference[p.key()] = p.value();

  RankEnv env;
  env.rank = env.local_rank = rank;
  env.world_size = env.local_world_size = dims.world_size;
  Collectives comm(env, dims, std::chrono::seconds(300));  // a cold start reads libtorch from disk
  std::vector<std::string> modules;  // the whole model, or this rank's pipeline stage
  if (dims.pp > 1) modules = llama3::pipeline_stage_modules(args, dims.pp, 1, 1)[static_cast<size_t>(dims.coordinate(rank, MeshDim::kPP))];
  llama3::Transformer part(args, torch::TensorOptions().device(torch::kMeta), modules);
  auto init = [&whole](const std::string& fqn, torch::Tensor& full) {
    whole->init_weight(fqn, full, at::make_generator<at::CPUGeneratorImpl>(parameter_seed(kSeed, fqn)));
  };
  ParallelizedModel model({{part.ptr(), llama3::parallel_plan(part)}}, dims, rank, &comm, ParallelOptions{}, init);
  for (const auto& [fqn, placement] : expected) EXPECT_EQ(model.placement(fqn).describe(), placement);
  for (const auto& [fqn, local] : model.parameters()) {
    const auto piece = model.piece(fqn);
    auto expected = reference.at(fqn);
    for (size_t d = 0; d < piece.sizes.size(); ++d) expected = expected.narrow(static_cast<int64_t>(d), piece.offsets[d], piece.sizes[d]);
    EXPECT_TRUE(torch::equal(local, expected)) << "rank " << rank << ": " << fqn << " " << model.placement(fqn).describe();
  }
  const auto full = model.full_parameters();
  if (rank != 0) return;
  EXPECT_EQ(full.size(), reference.size());
  for (const auto& [fqn, t] : full) EXPECT_TRUE(torch::equal(t, reference.at(fqn))) << fqn;
}

TEST(ParallelizedModelFourRanks, FsdpTimesTpPiecesAreTheWholeModelsBitForBit) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(4));
    return;
  }
  pieces_equal_the_whole_model(*test_rank(), ParallelDims::build(1, 2, 1, 2, 1, 1, 1, 4));
}

TEST(ParallelizedModelFourRanks, PipelineStagesTimesTpPiecesAreTheWholeModelsBitForBit) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(4));
    return;
  }
  pieces_equal_the_whole_model(*test_rank(), ParallelDims::build(1, 1, 1, 2, 2, 1, 1, 4));
}

// The tiny model with MoE in block 1 (of 0..2: every 2nd), `experts` routed experts of hidden size 48.
llama3::ModelArgs tiny_moe_args(int64_t experts) {
  auto a = testing::tiny_args();
  a.moe = MoEArgs{};
  a.moe->num_experts = experts;
  return a;
}

// FSDP4 + EP2 (efsdp 2 x ep 2 = 4 ranks) over `experts` experts; `w2` is an expert's placement.
void experts_over_efsdp(int64_t experts, const std::string& w2) {
  if (!test_rank()) {
    EXPECT_TRUE(run_as_ranks(4));
    return;
  }
  pieces_equal_the_whole_model(*test_rank(), ParallelDims::build(1, 4, 1, 1, 1, 2, 1, 4), tiny_moe_args(experts),
                               {{"layers.1.moe.experts.w2", w2}});
}

TEST(ParallelizedModelFourRanks, ExpertsOverEfsdpOnDim0AreTheWholeModelsBitForBit) {
  experts_over_efsdp(4, "(4, 32, 48) dim 0 over ep dim 0 over efsdp (uneven)");  // 4 ranks for 4 experts
}

TEST(ParallelizedModelFourRanks, ExpertsOverEfsdpOnDim1AreTheWholeModelsBitForBit) {
  experts_over_efsdp(2, "(2, 32, 48) dim 0 over ep dim 1 over efsdp (uneven)");  // 4 ranks outnumber 2 experts
}

}  // namespace
}  // namespace titan
