// FullyShardedModel's autograd machinery in one process (a shard group of one rank: the gathers
// are copies, on dim 1 where a parameter has one): the forward, the no-grad forward and every
// gradient equal the plain model's, with and without tied embeddings; a second forward before
// backward is refused. The multi-rank layouts are tested against one process in
// tests/integration/test_fsdp.sh and test_moe.sh (experts on dim 1).
#include <gtest/gtest.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "models/llama3/parallelize.h"
#include "parallel/fsdp.h"
#include "tests/unit/parallel/tiny_model.h"

namespace titan {
namespace {

using testing::initialised;

TEST(FullyShardedModel, OneShardEqualsThePlainModel) {
  for (bool tied : {false, true}) {
    SCOPED_TRACE(tied ? "tied embeddings" : "untied");
    auto reference = initialised(testing::tiny_args(tied));
    auto sharded = initialised(testing::tiny_args(tied));
    auto timeout = std::make_shared<std::chrono::milliseconds>(1000);
    ProcessGroup shard("fsdp", {0}, 0, c10::intrusive_ptr<c10d::Store>(), timeout);
    ProcessGroup replicas("dp_replicate", {0}, 0, c10::intrusive_ptr<c10d::Store>(), timeout);
    std::map<std::string, FsdpSharding> shardings;  // one shard: every parameter is its whole self
    for (const auto& p : sharded->named_parameters()) {
      const int64_t dim = p.value().dim() > 1 ? 1 : 0;  // the strided copies of a dim-1 cut
      shardings[p.key()] = {p.value().sizes().vec(), dim, &shard, &replicas};
    }
    FullyShardedModel fsdp(sharded.ptr(), llama3::parallel_plan(sharded), shardings, FsdpOptions{});
    const auto tokens = torch::randint(0, 64, {2, 8}, torch::kLong);  // (B, T)
    {
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(torch::allclose(sharded->forward(tokens), reference->forward(tokens), 1e-6, 1e-6));
    }
    for (int step = 0; step < 2; ++step) {  // twice: the second forward gathers into fresh tensors
      reference->zero_grad();
      sharded->zero_grad();
      reference->forward(tokens).pow(2).mean().backward();
      sharded->forward(tokens).pow(2).mean().backward();
      auto expected = reference->named_parameters();
      for (const auto& p : sharded->named_parameters()) {
        ASSERT_TRUE(p.value().grad().defined()) << p.key();
        EXPECT_TRUE(torch::allclose(p.value().grad(), expected[p.key()].grad(), 1e-5, 1e-7)) << p.key();
      }
    }
    auto logits = sharded->forward(tokens);
    EXPECT_THROW(sharded->forward(tokens), c10::Error);
  }
}

}  // namespace
}  // namespace titan
