// TorchTitan's llama4 flavors (torchtitan/models/llama4/__init__.py): Llama 3's decoder with MoE
// layers (models/moe), Llama 4's RoPE scaling and a 202,048-token vocabulary.
#pragma once

#include <string>
#include <vector>

#include "models/llama3/model_args.h"

namespace titan::llama4 {

// Throws std::invalid_argument listing the valid names (the iRoPE flavors, which need FlexAttention's
// chunked block-causal masks, are named as not supported).
llama3::ModelArgs flavor_args(const std::string& flavor);
std::vector<std::string> flavor_names();

}  // namespace titan::llama4
