// The arguments of TorchTitan's MoE layer (torchtitan/models/moe/moe.py MoEArgs), with its defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace titan {

struct MoEArgs {  // TorchTitan's MoEArgs defaults
  int64_t num_experts = 8;
  int64_t num_shared_experts = 1;
  std::string score_func = "sigmoid";  // or "softmax", over the experts
  bool route_norm = false;             // divide the top-k scores by their sum
  double route_scale = 1.0;
  bool score_before_experts = true;  // scale the experts' inputs, else combine their outputs by score
  int64_t top_k = 1;
  std::optional<double> load_balance_coeff = 1e-3;  // None: no expert_bias
  bool force_load_balance = false;                  // debug.moe_force_load_balance: round-robin routing

  // Throws std::invalid_argument naming the field.
  void validate() const;
};

}  // namespace titan
