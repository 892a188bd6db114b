#include "models/moe/moe_args.h"

#include <stdexcept>

namespace titan {

void MoEArgs::validate() const {
  auto fail = [](const std::string& msg) { throw std::invalid_argument("moe: " + msg); };
  if (num_experts < 1) fail("num_experts must be positive");
  if (top_k < 1 || top_k > num_experts)
    fail("top_k " + std::to_string(top_k) + " must be in [1, num_experts " + std::to_string(num_experts) + "]");
  if (num_shared_experts < 0) fail("num_shared_experts must not be negative");
  if (score_func != "sigmoid" && score_func != "softmax") fail("score_func '" + score_func + "' (valid: sigmoid, softmax)");
  if (load_balance_coeff && *load_balance_coeff <= 0) fail("load_balance_coeff must be positive (or None)");
}

}  // namespace titan
