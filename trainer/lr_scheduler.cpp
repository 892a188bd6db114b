#include "trainer/lr_scheduler.h"

#include <cmath>
#include <stdexcept>

namespace titan {

LRScheduler::LRScheduler(const JobConfig::LRScheduler& config, int64_t training_steps, double base_lr)
    : decay_type_(config.decay_type), min_lr_factor_(config.min_lr_factor), base_lr_(base_lr) {
  const int64_t total = config.total_steps.value_or(training_steps);
  warmup_ = config.warmup_steps;
  if (warmup_ > total) {
    warnings_.push_back("Warmup steps (" + std::to_string(warmup_) + ") exceed total steps (" + std::to_string(total) +
                        "). Adjusting warmup steps to " + std::to_string(total) + ".");
    warmup_ = total;
  }
  if (config.decay_ratio) {
    // Python's round(): ties to even, which nearbyint gives under the default rounding mode.
    decay_ = static_cast<int64_t>(std::nearbyint(static_cast<double>(total) * *config.decay_ratio));
    if (warmup_ + decay_ > total) {
      warnings_.push_back("Warmup (" + std::to_string(warmup_) + ") + decay (" + std::to_string(decay_) +
                          ") steps exceed total steps (" + std::to_string(total) + "). Adjusting decay steps to " +
                          std::to_string(total - warmup_) + ".");
      decay_ = total - warmup_;
    }
  } else {
    decay_ = total - warmup_;
  }
  stable_ = total + 1 - warmup_ - decay_;  // the +1 is a virtual last step: LR never reaches 0
}

void LRScheduler::load_state(const nlohmann::json& s) {
  base_lr_ = s.at("base_lr").get<double>();
  last_epoch_ = s.at("last_epoch").get<int64_t>();
}

double LRScheduler::factor(int64_t s) const {
  if (s < warmup_) return static_cast<double>(s + 1) / static_cast<double>(warmup_);
  if (s < warmup_ + stable_) return 1.0;
  const double progress = static_cast<double>(s + 1 - warmup_ - stable_) / static_cast<double>(decay_);
  double adjustment;
  if (decay_type_ == "linear") adjustment = 1 - progress;
  else if (decay_type_ == "sqrt") adjustment = 1 - std::sqrt(progress);
  else if (decay_type_ == "cosine") adjustment = 0.5 * (1.0 + std::cos(M_PI * progress));
  else throw std::invalid_argument("lr_scheduler.decay_type '" + decay_type_ + "' is not linear, sqrt or cosine");
  return min_lr_factor_ + (1 - min_lr_factor_) * adjustment;
}

}  // namespace titan
