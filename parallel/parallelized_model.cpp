#include "parallel/parallelized_model.h"

#include <stdexcept>

#include "parallel/grad_norm.h"
#include "parallel/vocab_parallel_loss.h"

namespace titan {
namespace {

int64_t split_dim(TpLayout layout) { return layout == TpLayout::kColumns ? 1 : 0; }

}  // namespace

ParallelizedModel::ParallelizedModel(std::shared_ptr<torch::nn::Module> model, const ParallelPlan& plan,
                                     const ParallelDims& dims, int64_t rank, Collectives* comm, ParallelOptions options)
    : model_(std::move(model)), dims_(dims), rank_(rank), comm_(comm) {
  if (dims_.tp > 1 && dims_.dp_replicate > 1 && dims_.dp_shard == 1)
    throw std::invalid_argument("DDP (data_parallel_replicate_degree > 1 with data_parallel_shard_degree 1) does not "
                                "combine with tensor_parallel_degree > 1, as in TorchTitan: shard with FSDP (HSDP) instead");
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model_->named_parameters()) params[p.key()] = p.value();
  for (const auto& [fqn, layout] : plan.tensor_parallel) tp_layouts_[fqn] = layout;
  for (const auto& [fqn, param] : params) placements_[fqn].global_shape = param.sizes().vec();

  if (dims_.tp > 1) {  // TorchTitan's order: TP first, then FSDP on the TP pieces
    ProcessGroup& tp = comm_->group("tp");
    torch::NoGradGuard no_grad;
    for (auto& [fqn, param] : params) {
      auto it = tp_layouts_.find(fqn);
      if (it == tp_layouts_.end()) throw std::logic_error("tensor parallel: the plan has no layout for " + fqn);
      if (it->second == TpLayout::kReplicated) continue;
      const int64_t dim = split_dim(it->second);
      placements_[fqn].splits.push_back({{MeshDim::kTP}, dim, /*uneven=*/false});
      const auto piece = placements_[fqn].piece(dims_, rank_);  // throws when the dim does not split
      param.set_data(param.narrow(dim, piece.offsets[static_cast<size_t>(dim)], piece.sizes[static_cast<size_t>(dim)]).clone());
    }
    tp_ = std::make_unique<TensorParallel>(tp, options.loss_parallel);
    tp_hooks_ = plan.tensor_parallel_hooks;
    for (auto* slot : tp_hooks_) *slot = tp_.get();
  }
  if (dims_.dp_shard > 1 || dims_.cp > 1) {
    for (auto& [fqn, p] : placements_) p.splits.push_back({{MeshDim::kDPShard, MeshDim::kCP}, 0, /*uneven=*/true});
    fsdp_ = std::make_unique<FullyShardedModel>(model_, plan, comm_->group("fsdp"), comm_->group("dp_replicate"),
                                                options.fsdp);
  } else if (dims_.dp_replicate > 1) {
    ddp_ = std::make_unique<DistributedDataParallel>(model_->named_parameters().pairs(), comm_->group("dp_replicate"));
  }
  for (const auto& p : model_->named_parameters())  // the mechanisms and the placements agree
    if (p.value().sizes().vec() != piece(p.key()).sizes)
      throw std::logic_error("parallel: the local piece of " + p.key() + " differs from its placement " +
                             placements_.at(p.key()).describe());
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
