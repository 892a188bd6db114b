// Runs this rank's part of a lowered pipeline order (parallel/pipeline_schedule.h) for one step:
// the forwards and backwards of its stages on each microbatch, and the activations and their
// gradients sent to and received from the ranks of the neighbouring stages over the pp group.
// Stages are cut apart: a stage's input is a leaf, whose gradient goes back to the stage before it
// (over the group, or locally when both run here). A zero-bubble I step computes only that input
// gradient, keeping the graph; its W step then runs the stage's backward again for the weight
// gradients: correct, and about half a backward dearer than B (PyTorch's W reuses I's
// intermediate gradients instead).
#pragma once

#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_group.h"

namespace titan {

struct PipelineStage {
  int64_t index = 0;  // in the whole pipeline
  // The stage's model part on microbatch m: tokens (first stage) or hidden states -> hidden states,
  // or what the last stage's loss takes (its summed loss, or logits).
  std::function<torch::Tensor(const torch::Tensor&, int64_t)> forward;
};

class PipelineRuntime {
 public:
  // `stages`: this rank's; `lowered`: every rank's order; `pp`: the group of this rank's pipeline
  // peers (group rank = pp coordinate). Activations between stages, and their gradients, are
  // `activation_shape` in `activation_dtype` (checked when sent).
  PipelineRuntime(std::vector<PipelineStage> stages, const PipelineOrder& lowered, std::vector<int64_t> stage_ranks,
                  ProcessGroup* pp, std::vector<int64_t> activation_shape, torch::TensorOptions activation_options);

  // One pass of every microbatch: `inputs[m]` feeds the first stage; the last stage's output of
  // microbatch m goes to loss(output, m), whose result backward starts from. Returns the sum of
  // those losses where this rank holds the last stage, else 0 (fp32 scalars).
  torch::Tensor step(const std::vector<torch::Tensor>& inputs,
                     const std::function<torch::Tensor(const torch::Tensor&, int64_t)>& loss);

  // Forward only, for evaluation (no gradients): microbatch by microbatch, each through the stages
  // in order, activations of `activation_shape` sent on to the next stage's rank. Returns the sum of
  // loss(output, m) where this rank holds the last stage, else 0.
  torch::Tensor evaluate(const std::vector<torch::Tensor>& inputs,
                         const std::function<torch::Tensor(const torch::Tensor&, int64_t)>& loss,
                         const std::vector<int64_t>& activation_shape);

  int64_t num_stages() const { return static_cast<int64_t>(stage_ranks_.size()); }
  const std::vector<PipelineAction>& actions() const { return actions_; }

 private:
  struct InFlight {                  // one (stage, microbatch) between its forward and its last backward step
    torch::Tensor input;              // a leaf (requires grad) except for the first stage's tokens
    torch::Tensor output;             // the stage's output, or the loss on the last stage
    torch::Tensor output_grad;        // received, or handed over by the next stage on this rank
    torch::Tensor input_grad;         // what goes back to the stage before
  };
  PipelineStage& stage(int64_t index);
  int64_t tag(int64_t from_stage, int64_t microbatch, bool backward) const;

  std::vector<PipelineStage> stages_;
  std::vector<PipelineAction> actions_;  // this rank's, lowered
  std::vector<int64_t> stage_ranks_;
  ProcessGroup* pp_;
  std::vector<int64_t> activation_shape_;
  torch::TensorOptions activation_options_;
  std::map<std::pair<int64_t, int64_t>, InFlight> in_flight_;  // (stage, microbatch)
};

}  // namespace titan
