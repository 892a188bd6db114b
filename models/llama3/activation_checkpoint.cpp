#include "models/llama3/activation_checkpoint.h"

#include <stdexcept>

#include "models/common/backward_phase.h"

namespace titan::llama3 {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// Reentrant checkpoint: the backward runs a nested forward + backward of the block, which
// accumulates the block's parameter gradients directly and returns the input's gradient.
struct CheckpointedBlock : public torch::autograd::Function<CheckpointedBlock> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin, TransformerBlockImpl* block) {
    ctx->save_for_backward({x, cos, sin});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    return block->forward_uncheckpointed(x, cos, sin);  // grad mode is off inside forward
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto* block = reinterpret_cast<TransformerBlockImpl*>(ctx->saved_data["block"].toInt());
    auto x = saved[0].detach().requires_grad_(true);
    torch::Tensor out;
    {
      torch::AutoGradMode enable(true);
      PhaseScope recomputation(recomputing());
      out = block->forward_uncheckpointed(x, saved[1], saved[2]);  // (B, T, dim)
    }
    if (input_gradient_only()) {  // the weights' gradients come in a later backward (a pipeline's W step)
      auto grad_x = torch::autograd::grad({out}, {x}, {grad_outputs[0]})[0];
      return {grad_x, torch::Tensor(), torch::Tensor(), torch::Tensor()};
    }
    torch::autograd::backward({out}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed_block_forward(TransformerBlockImpl* block, const torch::Tensor& x, const torch::Tensor& cos,
                                         const torch::Tensor& sin) {
  return CheckpointedBlock::apply(x, cos, sin, block);
}

int64_t apply_activation_checkpointing(Transformer& model, const std::string& mode, const std::string& selective_option) {
  int64_t every = 1;
  if (mode == "none") return 0;
  if (mode == "selective") {
    const bool digits = !selective_option.empty() &&
                        selective_option.find_first_not_of("0123456789") == std::string::npos;
    if (!digits)
      throw std::invalid_argument("activation_checkpoint.selective_ac_option '" + selective_option +
                                  "' is not supported (valid: a layer frequency N >= 0; per-op 'op' is not supported yet)");
    every = std::stoll(selective_option);
  } else if (mode != "full") {
    throw std::invalid_argument("activation_checkpoint.mode '" + mode + "' is not supported yet (valid: none, selective, full)");
  }
  int64_t count = 0;
  for (const auto& item : model->layers->items()) {
    const int64_t position = std::stoll(item.first) + 1;  // TorchTitan counts blocks from 1: every N-th is checkpointed
    const bool on = every == 0 || position % every == 0;
    item.second->as<TransformerBlockImpl>()->checkpoint_activations = on;
    count += on;
  }
  return count;
}

}  // namespace titan::llama3
