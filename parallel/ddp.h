// DDP's gradient sync overlapped with backward. Gradients live in flat buckets of ~25 MB (the
// parameters' .grad are views into them, as PyTorch's gradient_as_bucket_view); a hook on each
// parameter's gradient accumulator marks it ready, and a bucket is all-reduced (summed: the loss
// is already divided by the global token count) as soon as all its gradients are in, while
// backward goes on. Buckets follow the reverse parameter order, roughly the order backward produces
// them, and start in bucket order on every rank (the group's collectives must match across ranks).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"
#include "parallel/process_group.h"

namespace titan {

class DistributedDataParallel {
 public:
  static constexpr int64_t kBucketBytes = 25 << 20;  // PyTorch's bucket_cap_mb default

  DistributedDataParallel(const std::vector<std::pair<std::string, torch::Tensor>>& params, ProcessGroup& group,
                          int64_t bucket_bytes = kBucketBytes);
  ~DistributedDataParallel();  // removes the hooks
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  // Zeroes the buckets and points every parameter's .grad at its view (after optimizer zero_grad).
  void zero_grad();
  // Whether the next backward all-reduces (only the last microbatch of a step does: no_sync).
  void set_sync(bool sync);
  // After the last backward: starts the buckets not started yet (parameters that got no gradient)
  // and waits for all; every .grad then holds the sum over the group.
  void finish_gradient_sync();

  int64_t num_buckets() const;
  // Buckets the last step started from inside backward (the rest started in finish_gradient_sync).
  int64_t buckets_started_during_backward() const;

  struct State;  // buckets and readiness, shared with the hooks (defined in ddp.cpp)

 private:
  std::shared_ptr<State> state_;  // the hooks hold it weakly: a hook outliving this object does nothing
  std::vector<std::pair<std::shared_ptr<torch::autograd::Node>, uintptr_t>> hooks_;  // accumulator, key
};

}  // namespace titan
