#include "parallel/pipeline_runtime.h"

#include <ATen/record_function.h>

#include <stdexcept>
#include <string>

#include "models/common/backward_phase.h"

namespace titan {

PipelineRuntime::PipelineRuntime(std::vector<PipelineStage> stages, const PipelineOrder& lowered,
                                 std::vector<int64_t> stage_ranks, ProcessGroup* pp, std::vector<int64_t> activation_shape,
                                 torch::TensorOptions activation_options)
    : stages_(std::move(stages)),
      actions_(lowered.at(static_cast<size_t>(pp->rank()))),
      stage_ranks_(std::move(stage_ranks)),
      pp_(pp),
      activation_shape_(std::move(activation_shape)),
      activation_options_(std::move(activation_options)) {
  for (const auto& a : actions_) stage(a.stage);  // every action's stage is here
}

PipelineStage& PipelineRuntime::stage(int64_t index) {
  for (auto& s : stages_)
    if (s.index == index) return s;
  throw std::logic_error("pipeline: stage " + std::to_string(index) + " does not run on pp rank " + std::to_string(pp_->rank()));
}

// Unique within a step for each message between two ranks (same-tag messages would also arrive in order).
int64_t PipelineRuntime::tag(int64_t from_stage, int64_t microbatch, bool backward) const {
  return (microbatch * num_stages() + from_stage) * 2 + (backward ? 1 : 0);
}

torch::Tensor PipelineRuntime::step(const std::vector<torch::Tensor>& inputs,
                                    const std::function<torch::Tensor(const torch::Tensor&, int64_t)>& loss) {
  const int64_t last = num_stages() - 1, me = pp_->rank();
  auto rank_of = [this](int64_t s) { return stage_ranks_.at(static_cast<size_t>(s)); };
  auto loss_sum = torch::zeros({}, activation_options_.dtype(torch::kFloat32).requires_grad(false));
  std::vector<std::function<void()>> sends;  // waited at the end: a send never holds the schedule up
  auto receive = [&](int64_t from_stage, int64_t m, bool backward) {
    auto buffer = torch::empty(activation_shape_, activation_options_.requires_grad(false));
    pp_->recv(buffer, rank_of(from_stage), tag(from_stage, m, backward));
    return buffer;
  };
  auto send = [&](const torch::Tensor& t, int64_t to_stage, int64_t from_stage, int64_t m, bool backward) {
    if (t.sizes().vec() != activation_shape_ || t.scalar_type() != activation_options_.dtype().toScalarType())
      throw std::logic_error("pipeline: stage " + std::to_string(from_stage) + " sends a " + std::string(t.dtype().name()) +
                             " tensor of another shape than the activations it agreed on");
    sends.push_back(pp_->start_send(t.detach().contiguous(), rank_of(to_stage), tag(from_stage, m, backward)));
  };
  auto release_if_done = [&](std::pair<int64_t, int64_t> key) {
    const InFlight& f = in_flight_.at(key);
    if (!f.input.defined() && !f.output.defined() && !f.output_grad.defined() && !f.input_grad.defined()) in_flight_.erase(key);
  };

  for (const PipelineAction& a : actions_) {
    const std::pair<int64_t, int64_t> key{a.stage, a.microbatch};
    const int64_t m = a.microbatch;
    switch (a.op) {
      case PipelineOp::kRecvF:
        in_flight_[key].input = receive(a.stage - 1, m, false).requires_grad_(true);
        break;
      case PipelineOp::kForward: {
        InFlight& f = in_flight_[key];
        if (a.stage == 0) {
          f.input = inputs.at(static_cast<size_t>(m));
        } else if (rank_of(a.stage - 1) == me) {  // handed over here: the previous stage's output, cut off
          f.input = in_flight_.at({a.stage - 1, m}).output.detach().requires_grad_(true);
        }
        if (!f.input.defined()) throw std::logic_error("pipeline: " + a.str() + " runs before its input arrived");
        RECORD_USER_SCOPE("forward");
        auto out = stage(a.stage).forward(f.input, m);
        if (a.stage == last) {
          out = loss(out, m);
          loss_sum += out.detach();
        }
        f.output = out;
        break;
      }
      case PipelineOp::kSendF:
        send(in_flight_.at(key).output, a.stage + 1, a.stage, m, false);
        break;
      case PipelineOp::kRecvB:
        in_flight_.at(key).output_grad = receive(a.stage + 1, m, true);
        break;
      case PipelineOp::kBackward:
      case PipelineOp::kBackwardInput: {
        RECORD_USER_SCOPE("backward");
        InFlight& f = in_flight_.at(key);
        if (a.stage != last && !f.output_grad.defined()) {  // handed over here by the next stage
          InFlight& next = in_flight_.at({a.stage + 1, m});
          f.output_grad = next.input_grad;
          next.input_grad = torch::Tensor();
          release_if_done({a.stage + 1, m});
        }
        const torch::autograd::variable_list grad = f.output_grad.defined() ? torch::autograd::variable_list{f.output_grad}
                                                                           : torch::autograd::variable_list{};
        if (a.op == PipelineOp::kBackward) {
          torch::autograd::backward({f.output}, grad);
          if (a.stage > 0) f.input_grad = f.input.grad();
          f.input = f.output = f.output_grad = torch::Tensor();
          release_if_done(key);
        } else if (a.stage > 0) {  // the first stage's input (token ids) needs no gradient
          PhaseScope input_only(input_gradient_only());
          f.input_grad = torch::autograd::grad({f.output}, {f.input}, grad, /*retain_graph=*/true)[0];
        }
        break;
      }
      case PipelineOp::kBackwardWeight: {
        RECORD_USER_SCOPE("backward");
        InFlight& f = in_flight_.at(key);
        const torch::autograd::variable_list grad = f.output_grad.defined() ? torch::autograd::variable_list{f.output_grad}
                                                                           : torch::autograd::variable_list{};
        // Unrestricted: a checkpointed block's weights hang off no edge of the graph (its nested
        // backward reaches them), so restricting to the weights would skip it. The input's gradient
        // is computed again and dropped; I computed no weight gradient, so none is counted twice.
        torch::autograd::backward({f.output}, grad);
        f.input = f.output = f.output_grad = torch::Tensor();
        release_if_done(key);
        break;
      }
      case PipelineOp::kSendB: {
        InFlight& f = in_flight_.at(key);
        send(f.input_grad, a.stage - 1, a.stage, m, true);
        f.input_grad = torch::Tensor();
        release_if_done(key);
        break;
      }
    }
  }
  for (auto& wait : sends) wait();
  if (!in_flight_.empty()) {
    const auto& [s, m] = in_flight_.begin()->first;
    in_flight_.clear();
    throw std::logic_error("pipeline: stage " + std::to_string(s) + " microbatch " + std::to_string(m) +
                           " still holds tensors after the step");
  }
  return loss_sum;
}

torch::Tensor PipelineRuntime::evaluate(const std::vector<torch::Tensor>& inputs,
                                        const std::function<torch::Tensor(const torch::Tensor&, int64_t)>& loss,
                                        const std::vector<int64_t>& activation_shape) {
  torch::NoGradGuard no_grad;
  const int64_t last = num_stages() - 1, me = pp_->rank();
  auto rank_of = [this](int64_t s) { return stage_ranks_.at(static_cast<size_t>(s)); };
  auto loss_sum = torch::zeros({}, activation_options_.dtype(torch::kFloat32));
  std::vector<std::function<void()>> sends;  // every rank walks (microbatch, stage) in the same order: no send blocks
  for (int64_t m = 0; m < static_cast<int64_t>(inputs.size()); ++m) {
    torch::Tensor x;  // the output of stage s - 1 when it ran here
    for (int64_t s = 0; s <= last; ++s) {
      if (rank_of(s) != me) {
        x = torch::Tensor();
        continue;
      }
      if (s == 0) {
        x = inputs[static_cast<size_t>(m)];
      } else if (!x.defined()) {
        x = torch::empty(activation_shape, activation_options_);
        pp_->recv(x, rank_of(s - 1), tag(s - 1, m, false));
      }
      RECORD_USER_SCOPE("forward");
      x = stage(s).forward(x, m);
      if (s == last) {
        loss_sum += loss(x, m);
      } else if (rank_of(s + 1) != me) {
        sends.push_back(pp_->start_send(x.contiguous(), rank_of(s + 1), tag(s, m, false)));
      }
    }
  }
  for (auto& wait : sends) wait();
  return loss_sum;
}

}  // namespace titan
