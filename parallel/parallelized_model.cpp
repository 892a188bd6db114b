#include "parallel/parallelized_model.h"

#include <stdexcept>

#include "parallel/grad_norm.h"

namespace titan {

ParallelizedModel::ParallelizedModel(std::shared_ptr<torch::nn::Module> model, const ParallelPlan& plan,
                                     const ParallelDims& dims, int64_t rank, Collectives* comm, FsdpOptions fsdp)
    : model_(std::move(model)), dims_(dims), rank_(rank), comm_(comm) {
  std::vector<Split> splits;
  if (dims_.dp_shard > 1 || dims_.cp > 1) splits.push_back({{MeshDim::kDPShard, MeshDim::kCP}, 0, /*uneven=*/true});
  for (const auto& p : model_->named_parameters()) placements_[p.key()] = {p.value().sizes().vec(), splits};
  if (!splits.empty()) {
    fsdp_ = std::make_unique<FullyShardedModel>(model_, plan, comm_->group("fsdp"), comm_->group("dp_replicate"), fsdp);
  } else if (dims_.dp_replicate > 1) {
    ddp_ = std::make_unique<DistributedDataParallel>(model_->named_parameters().pairs(), comm_->group("dp_replicate"));
  }
  for (const auto& p : model_->named_parameters())  // the mechanism and the placements agree
    if (p.value().sizes().vec() != piece(p.key()).sizes)
      throw std::logic_error("parallel: the local piece of " + p.key() + " differs from its placement " +
                             placements_.at(p.key()).describe());
}

ParallelizedModel::~ParallelizedModel() = default;

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

void ParallelizedModel::zero_grad() {
  for (auto& p : model_->parameters()) p.mutable_grad() = torch::Tensor();
  if (ddp_) ddp_->zero_grad();
}

void ParallelizedModel::set_gradient_sync(bool sync) {
  if (ddp_) ddp_->set_sync(sync);
}

void ParallelizedModel::finish_gradient_sync() {
  if (ddp_) ddp_->finish_gradient_sync();  // FSDP reduced each unit's gradients as its backward ended
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
  if (fsdp_) return fsdp_->full_parameters();
  return parameters();
}

}  // namespace titan
