// One c10d process group over some of the job's ranks (Gloo on CPU) and the collectives the
// trainer and FSDP use, each waited on with the job's current timeout. Gloo in libtorch 1.13 has
// no reduce_scatter or _allgather_base: all_gather and reduce_scatter_sum emulate them, so callers
// never care. A group of one rank does no communication.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace c10d {
class ProcessGroupGloo;
class Store;
}  // namespace c10d

namespace titan {

class ProcessGroup {
 public:
  // Builds the group over `store` (members only, all in the same order); `timeout` is shared with
  // the job, so raising it after step 1 applies to every group.
  ProcessGroup(std::string name, std::vector<int64_t> ranks, int64_t global_rank,
               const c10::intrusive_ptr<c10d::Store>& store, std::shared_ptr<std::chrono::milliseconds> timeout);
  ~ProcessGroup();

  const std::string& name() const { return name_; }
  int64_t rank() const { return rank_; }  // within the group
  int64_t size() const { return static_cast<int64_t>(ranks_.size()); }
  const std::vector<int64_t>& ranks() const { return ranks_; }  // global ranks, ascending

  void all_reduce_sum(std::vector<torch::Tensor>& tensors);  // in place
  // Starts an in-place sum and returns at once; calling the result waits for it (DDP overlaps
  // its bucket all-reduces with backward this way).
  std::function<void()> start_all_reduce_sum(std::vector<torch::Tensor> tensors);
  double all_reduce_sum(double value);
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root);  // root: a group rank
  void barrier(std::chrono::milliseconds timeout);  // its own timeout: checkpoint saves wait longer than steps
  // out (size * n) <- every rank's in (n), in rank order.
  void all_gather(torch::Tensor& out, const torch::Tensor& in);
  // The same, started: calling the result waits for it (FSDP prefetches the next unit this way).
  std::function<void()> start_all_gather(const torch::Tensor& out, const torch::Tensor& in);
  // out (n) <- sum over ranks of their in.narrow(0, rank * n, n); in: (size * n).
  void reduce_scatter_sum(torch::Tensor& out, const torch::Tensor& in);

 private:
  std::string name_;
  std::vector<int64_t> ranks_;
  int64_t rank_ = 0;
  std::shared_ptr<std::chrono::milliseconds> timeout_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;  // null for a group of one
};

}  // namespace titan
