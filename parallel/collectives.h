// The world's process group (c10d Gloo over a TCPStore rendezvous) and the collectives the
// trainer needs. Gloo is CPU-only; the NCCL path for CUDA ranks is not built yet.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <vector>

#include "parallel/parallel_dims.h"

namespace c10d {
class ProcessGroupGloo;
class Store;
}  // namespace c10d

namespace titan {

class Collectives {
 public:
  // Rendezvous at MASTER_ADDR:MASTER_PORT (rank 0 hosts the store). Throws std::runtime_error
  // naming the address when a rank does not arrive within `timeout`.
  Collectives(const RankEnv& env, std::chrono::seconds timeout);
  ~Collectives();

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_; }
  // Timeout of every later collective (comm.train_timeout_seconds after the first step).
  void set_timeout(std::chrono::seconds timeout) { timeout_ = timeout; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors);  // in place, CPU tensors
  double all_reduce_sum(double value);
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root);
  void barrier();

 private:
  int64_t rank_, world_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg_;
};

// DDP's gradient sync: sums every gradient across ranks, in flat buckets of ~25 MB.
void all_reduce_gradients(const std::vector<torch::Tensor>& params, Collectives& comm);

}  // namespace titan
