// What the pass now running is doing, for layers that run their own nested forward and
// backward (activation checkpointing) or keep statistics of their forwards. One training thread
// per process: globals, each set for a scope by a PhaseScope.
#pragma once

#include <atomic>

namespace titan {

// Only the gradient of the inputs is wanted, not of the weights (a zero-bubble pipeline's I step;
// its W step computes the weight gradients later): autograd's restriction to the requested inputs
// does not reach inside a nested backward.
inline std::atomic<bool>& input_gradient_only() {
  static std::atomic<bool> flag{false};
  return flag;
}

// The forward running recomputes one already run (activation checkpointing's backward): MoE
// token counts skip it, so each token counts once.
inline std::atomic<bool>& recomputing() {
  static std::atomic<bool> flag{false};
  return flag;
}

// The forward running evaluates the model (validation): MoE token counts skip it, as they steer
// training's expert balancing only.
inline std::atomic<bool>& evaluating() {
  static std::atomic<bool> flag{false};
  return flag;
}

// Sets one of the flags above for its scope.
class PhaseScope {
 public:
  explicit PhaseScope(std::atomic<bool>& flag) : flag_(flag) { flag_ = true; }
  ~PhaseScope() { flag_ = false; }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  std::atomic<bool>& flag_;
};

}  // namespace titan
