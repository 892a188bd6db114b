// Activation checkpointing of transformer blocks (TorchTitan's [activation_checkpoint]): a
// checkpointed block keeps only its input in forward and recomputes its activations in backward.
#pragma once

#include <string>

#include "models/llama3/model.h"

namespace titan::llama3 {

// mode: "none" | "full" (every block) | "selective" with option N (every N-th block, counting
// from 1: blocks N-1, 2N-1, ...; "0" = every block). Returns how many blocks are checkpointed.
// Throws std::invalid_argument for other modes or options.
int64_t apply_activation_checkpointing(Transformer& model, const std::string& mode, const std::string& selective_option);

// Runs block->forward_uncheckpointed without keeping its activations; backward recomputes them.
torch::Tensor checkpointed_block_forward(TransformerBlockImpl* block, const torch::Tensor& x, const torch::Tensor& cos,
                                         const torch::Tensor& sin);

}  // namespace titan::llama3
