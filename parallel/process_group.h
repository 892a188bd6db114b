// One c10d process group over some of the job's ranks, on Gloo (CPU tensors) or NCCL (the rank's
// GPU), and every collective the trainer and the parallel layers use, each waited on with the
// job's current timeout. Callers never see which backend runs: all_gather and reduce_scatter_sum
// take one flat tensor on both (NCCL's native forms; on Gloo an all-gather into views and an
// all-to-all plus a local sum, the same traffic as a ring reduce-scatter, where Gloo's own
// _reduce_scatter_base is a full all-reduce). A group of one rank does no communication.
// Each collective is a "c10d::{name}" range in profiler traces (its issue; a started one's wait
// falls in its caller's range).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/common/torch_api.h"

namespace c10d {
class Backend;
class Store;
}  // namespace c10d

namespace titan {

enum class ReduceOp { kSum, kMax };

class ProcessGroup {
 public:
  // Builds the group over `store` (members only, all in the same order); `timeout` is shared with
  // the job's groups (see set_timeout). A CUDA `device` makes an NCCL group whose tensors live on
  // that GPU; a CPU one a Gloo group.
  ProcessGroup(std::string name, std::vector<int64_t> ranks, int64_t global_rank,
               const c10::intrusive_ptr<c10d::Store>& store, std::shared_ptr<std::chrono::milliseconds> timeout,
               torch::Device device = torch::kCPU);
  ~ProcessGroup();

  const std::string& name() const { return name_; }
  int64_t rank() const { return rank_; }  // within the group
  int64_t size() const { return static_cast<int64_t>(ranks_.size()); }
  const std::vector<int64_t>& ranks() const { return ranks_; }  // global ranks, ascending
  const torch::Device& device() const { return device_; }      // where the collectives' tensors live
  bool is_nccl() const { return nccl_; }
  // The timeout of every later collective (shared with the job's groups) and of this backend's own
  // clock: NCCL's watchdog reads only the backend's, not the per-call one.
  void set_timeout(std::chrono::milliseconds timeout);

  // In place; one tensor per call (c10d reads several as one rank's replicas and sums them too).
  void all_reduce(torch::Tensor& t, ReduceOp op = ReduceOp::kSum);
  // Starts an in-place sum and returns at once; calling the result waits for it (DDP overlaps
  // its bucket all-reduces with backward this way).
  std::function<void()> start_all_reduce_sum(torch::Tensor t);
  double all_reduce_sum(double value);
  double all_reduce_max(double value);
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root);  // root: a group rank
  void barrier(std::chrono::milliseconds timeout);  // its own timeout: checkpoint saves wait longer than steps
  // out (size * n) <- every rank's in (n), in rank order.
  void all_gather(torch::Tensor& out, const torch::Tensor& in);
  // The same, started: calling the result waits for it (FSDP prefetches the next unit this way).
  std::function<void()> start_all_gather(const torch::Tensor& out, const torch::Tensor& in);
  // out (n) <- sum over ranks of their in.narrow(0, rank * n, n); in: (size * n).
  void reduce_scatter_sum(torch::Tensor& out, const torch::Tensor& in);
  // Rank r sends in's rows [sum(in_splits[:j]), +in_splits[j]) to rank j and receives rank j's
  // piece into out's rows [sum(out_splits[:j]), +out_splits[j]); empty splits = equal pieces.
  void all_to_all(torch::Tensor& out, const torch::Tensor& in, std::vector<int64_t> out_splits,
                  std::vector<int64_t> in_splits);
  // The same, started: calling the result waits for it (ring attention shifts the next block meanwhile).
  std::function<void()> start_all_to_all(torch::Tensor& out, const torch::Tensor& in, std::vector<int64_t> out_splits,
                                         std::vector<int64_t> in_splits);
  // Point to point (dst, src: group ranks; tag: tells messages between the same two ranks apart).
  // A send is started and returns at once; calling the result waits for it. A receive waits.
  std::function<void()> start_send(const torch::Tensor& t, int64_t dst, int64_t tag = 0);
  void recv(torch::Tensor& t, int64_t src, int64_t tag = 0);

 private:
  double all_reduce_scalar(double value, ReduceOp op);

  std::string name_;
  std::vector<int64_t> ranks_;
  int64_t rank_ = 0;
  std::shared_ptr<std::chrono::milliseconds> timeout_;
  torch::Device device_;
  bool nccl_ = false;
  c10::intrusive_ptr<c10d::Backend> pg_;  // null for a group of one
};

}  // namespace titan
