// Layout-independent initialisation over four real ranks: under FSDP2 x TP2 and under PP2 x TP2
// (each rank holding its pipeline stage's part), every rank's pieces are bit for bit the
// corresponding slices of the whole model one process initialises from the same seed, and the
// whole parameters gathered back for an export (over fsdp, tp and pp) are the whole model's.
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

void pieces_equal_the_whole_model(int rank, const ParallelDims& dims) {
  torch::set_num_threads(1);
  const auto args = testing::tiny_args();
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

}  // namespace
}  // namespace titan
