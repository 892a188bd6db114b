// [validation], as TorchTitan's Validator: at step 1 and every `freq` steps, `steps` batches of the
// validation data (-1: all of it) are evaluated without gradients; the loss is the mean over those
// batches of each global batch's loss per valid token.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "models/common/torch_api.h"
#include "parallel/collectives.h"
#include "trainer/dataloader.h"
#include "trainer/job_config.h"

namespace titan {

class Validator {
 public:
  // `loss_sum`: the summed cross-entropy of this rank's part of a batch (its sequence piece under
  // cp, 0 off the last pipeline stage), run without gradients. `comm` is null on one rank.
  using LossSum = std::function<torch::Tensor(const Batch&)>;
  Validator(JobConfig::Validation config, std::unique_ptr<DataLoader> loader, LossSum loss_sum, const Collectives* comm,
            bool pipelined);

  bool should_validate(int64_t step) const { return step == 1 || step % config_.freq == 0; }

  struct Result {
    double loss;     // the same on every rank
    int64_t tokens;  // input tokens this rank read
  };
  Result validate();

  DataLoader& loader() { return *loader_; }

 private:
  JobConfig::Validation config_;
  std::unique_ptr<DataLoader> loader_;
  LossSum loss_sum_;
  const Collectives* comm_;
  bool pipelined_;
};

}  // namespace titan
