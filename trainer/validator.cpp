#include "trainer/validator.h"

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <string>

#include "models/common/backward_phase.h"

namespace titan {

Validator::Validator(JobConfig::Validation config, std::unique_ptr<DataLoader> loader, LossSum loss_sum,
                     const Collectives* comm, bool pipelined)
    : config_(std::move(config)),
      loader_(std::move(loader)),
      loss_sum_(std::move(loss_sum)),
      comm_(comm),
      pipelined_(pipelined) {}

Validator::Result Validator::validate() {
  torch::NoGradGuard no_grad;
  PhaseScope evaluating_scope(evaluating());
  // steps -1 reads the whole (finite) data each time; TorchTitan's second pass would find it spent.
  if (config_.steps == -1) loader_->stream().restore(DataCursor{});
  torch::Tensor total;
  int64_t batches = 0, tokens = 0;
  while (config_.steps == -1 || batches < config_.steps) {
    std::optional<Batch> batch = loader_->next();
    if (!batch) break;
    const double valid = static_cast<double>(batch->labels.ne(-100).sum().item<int64_t>());
    const double global_valid = std::max(comm_ ? comm_->group("dp").all_reduce_sum(valid) : valid, 1.0);
    const torch::Tensor loss = loss_sum_(*batch).to(torch::kFloat32) / global_valid;
    total = total.defined() ? total + loss : loss;
    tokens += batch->labels.numel();
    ++batches;
  }
  // TorchTitan's loop draws one batch more than it evaluates before it stops; so does this one.
  if (config_.steps != -1) loader_->next();
  if (batches == 0)
    throw std::invalid_argument("validation data '" + loader_->stream().source().describe() +
                                "' holds no whole global batch (validation.local_batch_size x data-parallel degree "
                                "sequences of validation.seq_len + 1 tokens)");
  double loss = total.item<double>() / static_cast<double>(batches);
  if (comm_) {
    if (pipelined_) loss = comm_->group("pp").all_reduce_sum(loss);  // computed by the last stage's ranks
    loss = comm_->group("loss").all_reduce_sum(loss);                // each rank's share of the global batches
  }
  return {loss, tokens};
}

}  // namespace titan
