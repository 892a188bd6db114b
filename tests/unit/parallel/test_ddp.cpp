// DistributedDataParallel with two real Gloo ranks in one process (two threads over a HashStore):
// after two microbatches per rank (the first under no_sync) every .grad equals the sum of the four
// gradients plain autograd gives, with many small buckets started while backward still runs, and
// with reentrant activation checkpointing (its nested backward fires the hooks).
#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "models/llama3/activation_checkpoint.h"
#include "parallel/ddp.h"
#include "tests/unit/parallel/tiny_model.h"

namespace titan {
namespace {

llama3::Transformer initialised() {
  return testing::initialised(testing::tiny_args());
}

torch::Tensor loss_of(llama3::Transformer& m, const torch::Tensor& tokens) {
  return m->forward(tokens).pow(2).mean();
}

struct RankResult {
  std::map<std::string, torch::Tensor> grads;
  int64_t buckets = 0, started_during_backward = 0;
};

TEST(DistributedDataParallel, TwoRanksSumEveryMicrobatchGradient) {
  torch::manual_seed(3);
  std::vector<std::vector<torch::Tensor>> batches(2);  // [rank][microbatch] (B, T)
  for (auto& rank : batches)
    for (int i = 0; i < 2; ++i) rank.push_back(torch::randint(0, 64, {2, 8}, torch::kLong));

  // Reference: plain autograd accumulates all four microbatches' gradients into one model.
  auto reference = initialised();
  for (const auto& rank : batches)
    for (const auto& tokens : rank) loss_of(reference, tokens).backward();

  for (const std::string ac : {"none", "full"}) {
    SCOPED_TRACE("activation checkpointing " + ac);
    auto store = c10::make_intrusive<c10d::HashStore>();
    auto timeout = std::make_shared<std::chrono::milliseconds>(20000);
    std::vector<RankResult> results(2);
    std::vector<llama3::Transformer> models = {initialised(), initialised()};  // the seed is global: not in the threads
    std::mutex set_threads;
    auto run_rank = [&](int64_t rank) {
      {  // at::set_num_threads is not thread-safe (it resets process-wide thread pools and oneDNN's cache)
        std::lock_guard<std::mutex> lock(set_threads);
        torch::set_num_threads(1);
      }
      ProcessGroup group("dp_replicate", {0, 1}, rank, store, timeout);
      auto& model = models[static_cast<size_t>(rank)];
      llama3::apply_activation_checkpointing(model, ac, "1");
      DistributedDataParallel ddp(model->named_parameters().pairs(), group, /*bucket_bytes=*/8 << 10);
      for (int step = 0; step < 2; ++step) {  // the second step checks that zero_grad resets everything
        for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
        ddp.zero_grad();
        for (size_t i = 0; i < 2; ++i) {
          ddp.set_sync(i == 1);
          loss_of(model, batches[static_cast<size_t>(rank)][i]).backward();
        }
        ddp.finish_gradient_sync();
      }
      for (const auto& p : model->named_parameters())
        results[static_cast<size_t>(rank)].grads[p.key()] = p.value().grad().clone();
      results[static_cast<size_t>(rank)].buckets = ddp.num_buckets();
      results[static_cast<size_t>(rank)].started_during_backward = ddp.buckets_started_during_backward();
    };
    std::thread other(run_rank, 1);
    run_rank(0);
    other.join();

    for (const auto& r : results) {
      EXPECT_GT(r.buckets, 5);
      EXPECT_GT(r.started_during_backward, r.buckets / 2);  // most buckets overlap with backward
      for (const auto& p : reference->named_parameters())
        EXPECT_TRUE(torch::allclose(r.grads.at(p.key()), p.value().grad(), 1e-5, 1e-7)) << p.key();
    }
  }
}

}  // namespace
}  // namespace titan
