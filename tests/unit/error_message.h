// The message of the std::invalid_argument a call throws, to compare a one-line error whole.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace titan::testing {

inline std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace titan::testing
