// TorchTitan's warmup-stable-decay LR schedule as a LambdaLR: lr = base_lr * factor(last_epoch).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/job_config.h"

namespace titan {

class LRScheduler {
 public:
  LRScheduler(const JobConfig::LRScheduler& config, int64_t training_steps);

  // Multiplier for scheduler step s (s = 0 at training step 1).
  double factor(int64_t s) const;
  double current_factor() const { return factor(last_epoch_); }
  void step() { ++last_epoch_; }

  int64_t last_epoch() const { return last_epoch_; }
  void set_last_epoch(int64_t e) { last_epoch_ = e; }
  int64_t warmup_steps() const { return warmup_; }
  int64_t stable_steps() const { return stable_; }
  int64_t decay_steps() const { return decay_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  int64_t warmup_ = 0, stable_ = 0, decay_ = 0;
  std::string decay_type_;
  double min_lr_factor_ = 0;
  int64_t last_epoch_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace titan
