// TorchTitan's warmup-stable-decay LR schedule as a LambdaLR: lr = base_lr * factor(last_epoch).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/job_config.h"

namespace titan {

class LRScheduler {
 public:
  LRScheduler(const JobConfig::LRScheduler& config, int64_t training_steps, double base_lr = 1.0);

  // Multiplier for scheduler step s (s = 0 at training step 1).
  double factor(int64_t s) const;
  double current_factor() const { return factor(last_epoch_); }
  double lr() const { return base_lr_ * current_factor(); }  // the LR of the next optimizer step
  void step() { ++last_epoch_; }

  int64_t last_epoch() const { return last_epoch_; }
  // LambdaLR's checkpointed state: base LR and position. The shape of the schedule comes from the
  // current config, as in TorchTitan, so raising training.steps on resume reshapes what is left.
  // last_lr: the LR the next step takes (torch's _last_lr); saved for exports to TorchTitan, not read back.
  nlohmann::json state() const { return {{"base_lr", base_lr_}, {"last_epoch", last_epoch_}, {"last_lr", lr()}}; }
  void load_state(const nlohmann::json& s);
  int64_t warmup_steps() const { return warmup_; }
  int64_t stable_steps() const { return stable_; }
  int64_t decay_steps() const { return decay_; }
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  int64_t warmup_ = 0, stable_ = 0, decay_ = 0;
  std::string decay_type_;
  double min_lr_factor_ = 0;
  double base_lr_ = 1.0;
  int64_t last_epoch_ = 0;
  std::vector<std::string> warnings_;
};

}  // namespace titan
