// Whether the backward now running wants only the gradient of its inputs, not of the weights (a
// zero-bubble pipeline's I step; its W step computes the weight gradients later). Layers that run
// their own nested backward (activation checkpointing) read it, since autograd's restriction to
// the requested inputs does not reach inside them. One training thread per process: a global.
#pragma once

#include <atomic>

namespace titan {

inline std::atomic<bool>& input_gradient_only() {
  static std::atomic<bool> flag{false};
  return flag;
}

// Sets input_gradient_only() for its scope.
class InputGradientOnlyScope {
 public:
  InputGradientOnlyScope() { input_gradient_only() = true; }
  ~InputGradientOnlyScope() { input_gradient_only() = false; }
  InputGradientOnlyScope(const InputGradientOnlyScope&) = delete;
  InputGradientOnlyScope& operator=(const InputGradientOnlyScope&) = delete;
};

}  // namespace titan
