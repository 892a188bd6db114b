// The warmup-stable-decay schedule against TorchTitan's worked example and hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/lr_scheduler.h"

namespace titan {
namespace {

TEST(LRScheduler, DebugConfigFactorsAsTorchTitan) {
  JobConfig::LRScheduler c;  // debug_model.toml: warmup 2, decay_ratio 0.8, linear, steps 10
  c.warmup_steps = 2, c.decay_ratio = 0.8, c.decay_type = "linear", c.min_lr_factor = 0.0;
  LRScheduler s(c, 10);
  const double expected[] = {0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125};
  for (int step = 0; step < 10; ++step) {
    EXPECT_DOUBLE_EQ(s.current_factor(), expected[step]) << "training step " << step + 1;
    s.step();
  }
  EXPECT_EQ(s.warmup_steps(), 2);
  EXPECT_EQ(s.decay_steps(), 8);
  EXPECT_EQ(s.stable_steps(), 1);
}

TEST(LRScheduler, NoDecayRatioDecaysRightAfterWarmup) {
  JobConfig::LRScheduler c;
  c.warmup_steps = 1;
  LRScheduler s(c, 4);  // decay = 3, stable = 1
  EXPECT_DOUBLE_EQ(s.factor(0), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(1), 1.0);
  EXPECT_DOUBLE_EQ(s.factor(2), 2.0 / 3);
  EXPECT_DOUBLE_EQ(s.factor(3), 1.0 / 3);
}

TEST(LRScheduler, SqrtCosineAndMinFactor) {
  JobConfig::LRScheduler c;
  c.warmup_steps = 0, c.decay_ratio = 1.0, c.min_lr_factor = 0.1;
  c.decay_type = "sqrt";
  LRScheduler sq(c, 4);  // warmup 0, decay 4, stable 1: s=1 -> p=1/4
  EXPECT_DOUBLE_EQ(sq.factor(0), 1.0);
  EXPECT_DOUBLE_EQ(sq.factor(1), 0.1 + 0.9 * (1 - std::sqrt(0.25)));
  c.decay_type = "cosine";
  LRScheduler cs(c, 4);
  EXPECT_DOUBLE_EQ(cs.factor(2), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.5)));
}

TEST(LRScheduler, DecayStepsUseBankersRounding) {
  JobConfig::LRScheduler c;
  c.warmup_steps = 0;
  c.decay_ratio = 0.5;
  EXPECT_EQ(LRScheduler(c, 5).decay_steps(), 2);  // round(2.5) == 2 in Python
  EXPECT_EQ(LRScheduler(c, 7).decay_steps(), 4);  // round(3.5) == 4
}

TEST(LRScheduler, OversizedWarmupAndDecayAreClampedWithWarnings) {
  JobConfig::LRScheduler c;
  c.warmup_steps = 200, c.decay_ratio = 0.8;
  LRScheduler s(c, 10);
  EXPECT_EQ(s.warmup_steps(), 10);
  EXPECT_EQ(s.decay_steps(), 0);
  EXPECT_EQ(s.warnings().size(), 2u);
  EXPECT_DOUBLE_EQ(s.factor(0), 0.1);
}

}  // namespace
}  // namespace titan
