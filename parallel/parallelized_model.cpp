#include "parallel/parallelized_model.h"

#include <stdexcept>

#include "parallel/grad_norm.h"
#include "parallel/vocab_parallel_loss.h"

namespace titan {
namespace {

int64_t split_dim(TpLayout layout) { return layout == TpLayout::kColumns ? 1 : 0; }

}  // namespace

ParallelizedModel::ParallelizedModel(std::shared_ptr<torch::nn::Module> model, const ParallelPlan& plan,
                                     const ParallelDims& dims, int64_t rank, Collectives* comm, ParallelOptions options,
                                     const ParameterInit& init)
    : model_(std::move(model)), dims_(dims), rank_(rank), comm_(comm) {
  if (dims_.tp > 1 && dims_.dp_replicate > 1 && dims_.dp_shard == 1)
    throw std::invalid_argument("DDP (data_parallel_replicate_degree > 1 with data_parallel_shard_degree 1) does not "
                                "combine with tensor_parallel_degree > 1, as in TorchTitan: shard with FSDP (HSDP) instead");
  for (const auto& [fqn, layout] : plan.tensor_parallel) tp_layouts_[fqn] = layout;
  // Placements, in TorchTitan's order: TP cuts the whole tensor, FSDP then dim 0 of the TP piece.
  const bool sharded = dims_.dp_shard > 1 || dims_.cp > 1;
  std::map<std::string, std::vector<int64_t>> fsdp_unsharded;  // the TP pieces' shapes
  for (const auto& p : model_->named_parameters()) {
    Placement& placement = placements_[p.key()];
    placement.global_shape = p.value().sizes().vec();
    if (dims_.tp > 1) {
      auto it = tp_layouts_.find(p.key());
      if (it == tp_layouts_.end()) throw std::logic_error("tensor parallel: the plan has no layout for " + p.key());
      if (it->second != TpLayout::kReplicated) placement.splits.push_back({{MeshDim::kTP}, split_dim(it->second), false});
    }
    fsdp_unsharded[p.key()] = placement.piece(dims_, rank_).sizes;  // throws when an even cut does not divide
    if (sharded) placement.splits.push_back({{MeshDim::kDPShard, MeshDim::kCP}, 0, /*uneven=*/true});
  }
  // Materialise: one whole parameter at a time, then only this rank's piece stays.
  torch::NoGradGuard no_grad;
  for (const auto& [fqn, layer] : plan.weights) {
    auto full = torch::empty(placement(fqn).global_shape, torch::kFloat32);
    init(fqn, full);
    const auto piece = this->piece(fqn);
    auto local = full;
    for (size_t d = 0; d < piece.sizes.size(); ++d)
      local = local.narrow(static_cast<int64_t>(d), piece.offsets[d], piece.sizes[d]);
    layer->replace_weight(local.to(options.param_options, /*non_blocking=*/false, /*copy=*/true));
  }
  for (const auto& p : model_->named_parameters())
    if (p.value().is_meta()) throw std::logic_error("parallel: the plan names no layer holding " + p.key());
  if (dims_.tp > 1) {
    tp_ = std::make_unique<TensorParallel>(comm_->group("tp"), options.loss_parallel);
    tp_hooks_ = plan.tensor_parallel_hooks;
    for (auto* slot : tp_hooks_) *slot = tp_.get();
  }
  if (sharded) {
    fsdp_ = std::make_unique<FullyShardedModel>(model_, plan, fsdp_unsharded, comm_->group("fsdp"),
                                                comm_->group("dp_replicate"), options.fsdp);
  } else if (dims_.dp_replicate > 1) {
    ddp_ = std::make_unique<DistributedDataParallel>(model_->named_parameters().pairs(), comm_->group("dp_replicate"));
  }
}

ParallelizedModel::~ParallelizedModel() {
  for (auto* slot : tp_hooks_) *slot = nullptr;
}

std::vector<std::pair<std::string, torch::Tensor>> ParallelizedModel::parameters() const {
  return model_->named_parameters().pairs();
}

const Placement& ParallelizedModel::placement(const std::string& fqn) const {
  auto it = placements_.find(fqn);
  if (it == placements_.end()) throw std::out_of_range("parallel: no parameter " + fqn);
  return it->second;
}

Placement::Piece ParallelizedModel::piece(const std::string& fqn) const { return placement(fqn).piece(dims_, rank_); }

bool ParallelizedModel::owns(const std::string& fqn) const { return placement(fqn).owned_by(dims_, rank_); }

torch::Tensor ParallelizedModel::cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels) {
  const auto flat_logits = logits.flatten(0, 1), flat_labels = labels.reshape({-1});  // (B*T, V or V/tp), (B*T)
  if (tp_ && tp_->loss_parallel()) {
    ProcessGroup& tp = comm_->group("tp");
    return vocab_parallel_cross_entropy_sum(flat_logits, flat_labels, tp.rank() * flat_logits.size(1), tp);
  }
  return torch::nn::functional::cross_entropy(
      flat_logits.to(torch::kFloat32), flat_labels,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(-100));
}

void ParallelizedModel::zero_grad() {
  for (auto& p : model_->parameters()) p.mutable_grad() = torch::Tensor();
  if (ddp_) ddp_->zero_grad();
}

void ParallelizedModel::set_gradient_sync(bool sync) {
  if (ddp_) ddp_->set_sync(sync);
}

void ParallelizedModel::finish_gradient_sync() {
  if (ddp_) ddp_->finish_gradient_sync();  // FSDP reduced each unit's gradients as its backward ended
  if (!tp_) return;
  // Sequence-parallel norms saw a slice of the sequence on each tp rank: their gradients add up.
  for (const auto& p : model_->named_parameters())
    if (tp_layouts_.at(p.key()) == TpLayout::kReplicated && p.value().grad().defined()) {
      auto grad = p.value().grad();
      comm_->group("tp").all_reduce(grad);
    }
}

double ParallelizedModel::clip_grad_norm_(double max_norm) {
  std::vector<torch::Tensor> params;
  std::vector<bool> counted;
  for (const auto& p : model_->named_parameters()) {
    params.push_back(p.value());
    counted.push_back(owns(p.key()));
  }
  std::function<double(double)> across;  // every piece has one owner: one sum over the world
  if (comm_) across = [this](double sq) { return comm_->world().all_reduce_sum(sq); };
  return titan::clip_grad_norm_(params, counted, max_norm, across);
}

std::vector<std::pair<std::string, torch::Tensor>> ParallelizedModel::full_parameters() {
  auto out = fsdp_ ? fsdp_->full_parameters() : parameters();  // whole over the data-parallel ranks
  if (!tp_) return out;
  ProcessGroup& tp = comm_->group("tp");
  torch::NoGradGuard no_grad;
  for (auto& [fqn, t] : out) {
    const TpLayout layout = tp_layouts_.at(fqn);
    if (layout == TpLayout::kReplicated) continue;
    auto local = t.contiguous();
    auto gathered = torch::empty({tp.size() * local.numel()}, local.options());
    tp.all_gather(gathered, local.view({-1}));
    std::vector<int64_t> stacked = {tp.size()};
    stacked.insert(stacked.end(), local.sizes().begin(), local.sizes().end());
    t = torch::cat(gathered.view(stacked).unbind(0), split_dim(layout));  // the tp pieces side by side
  }
  return out;
}

}  // namespace titan
