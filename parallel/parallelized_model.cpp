#include "parallel/parallelized_model.h"

#include <algorithm>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "parallel/grad_norm.h"

namespace titan {
namespace {

// The pieces of a tensor that the ranks of `group` hold, side by side on `dim`.
torch::Tensor gather_pieces(ProcessGroup& group, const torch::Tensor& piece, int64_t dim) {
  auto local = piece.contiguous();
  auto gathered = torch::empty({group.size() * local.numel()}, local.options());
  group.all_gather(gathered, local.view({-1}));
  std::vector<int64_t> stacked = {group.size()};
  stacked.insert(stacked.end(), local.sizes().begin(), local.sizes().end());
  return torch::cat(gathered.view(stacked).unbind(0), dim);
}

}  // namespace

ParallelizedModel::ParallelizedModel(std::vector<ModelPart> parts, const ParallelDims& dims, int64_t rank, Collectives* comm,
                                     ParallelOptions options, const ParameterInit& init)
    : parts_(std::move(parts)), dims_(dims), rank_(rank), comm_(comm) {
  if (dims_.tp > 1 && dims_.dp_replicate > 1 && dims_.dp_shard == 1)
    throw std::invalid_argument("DDP (data_parallel_replicate_degree > 1 with data_parallel_shard_degree 1) does not "
                                "combine with tensor_parallel_degree > 1, as in TorchTitan: shard with FSDP (HSDP) instead");
  for (const auto& part : parts_) {
    for (const auto& [fqn, layout] : part.plan.tensor_parallel) tp_layouts_[fqn] = layout;
    if (dims_.ep > 1) ep_sharded_.insert(part.plan.routed_experts.begin(), part.plan.routed_experts.end());
  }
  // Placements, in TorchTitan's order: TP cuts the whole tensor, FSDP then dim 0 of the TP piece;
  // routed experts are cut over ep (and etp), then FSDP shards them over efsdp; pipeline stages
  // live on their pp coordinate. FSDP runs when any of its groups has several ranks.
  const bool sharded = dims_.dp_shard > 1 || dims_.cp > 1 || (dims_.ep > 1 && dims_.efsdp() > 1);
  std::map<std::string, FsdpSharding> shardings;  // what FSDP cuts: the TP or EP pieces
  for (const auto& [fqn, param] : parameters()) {
    Placement& placement = placements_[fqn];
    placement.global_shape = param.sizes().vec();
    if (dims_.pp > 1) placement.pp_rank = dims_.coordinate(rank_, MeshDim::kPP);
    const bool expert = ep_sharded_.count(fqn) > 0;
    if (expert) {  // experts over ep (dim 0), then their hidden dim over etp
      placement.splits.push_back({{MeshDim::kEP}, 0, false});
      if (dims_.etp > 1) placement.splits.push_back({{MeshDim::kETP}, *tp_layouts_.at(fqn).dim, false});
    } else if (dims_.tp > 1) {
      auto it = tp_layouts_.find(fqn);
      if (it == tp_layouts_.end()) throw std::logic_error("tensor parallel: the plan has no layout for " + fqn);
      if (!it->second.replicated()) placement.splits.push_back({{MeshDim::kTP}, *it->second.dim, false});
    }
    const auto unsharded = placement.piece(dims_, rank_).sizes;  // throws when an even cut does not divide
    if (!sharded) continue;
    // TorchTitan's _experts_shard_placement_fn: dim 1 when efsdp * ep ranks outnumber the experts.
    const int64_t dim = expert && dims_.efsdp() * dims_.ep > placement.global_shape[0] ? 1 : 0;
    shardings[fqn] = {unsharded, dim, &comm_->group(expert ? "efsdp" : "fsdp"), &comm_->group("dp_replicate")};
    const std::vector<MeshDim> over =
        expert ? std::vector<MeshDim>{MeshDim::kEFSDP} : std::vector<MeshDim>{MeshDim::kDPShard, MeshDim::kCP};
    placement.splits.push_back({over, dim, /*uneven=*/true});
  }
  // Materialise: one whole parameter at a time, then only this rank's piece stays.
  {
    torch::NoGradGuard no_grad;
    for (const auto& part : parts_)
      for (const auto& w : part.plan.weights) {
        auto full = torch::empty(placement(w.fqn).global_shape, torch::kFloat32);
        init(w.fqn, full);
        const auto piece = this->piece(w.fqn);
        auto local = full;
        for (size_t d = 0; d < piece.sizes.size(); ++d)
          local = local.narrow(static_cast<int64_t>(d), piece.offsets[d], piece.sizes[d]);
        w.layer->replace_weight(w.name, local.to(options.param_options, /*non_blocking=*/false, /*copy=*/true));
      }
  }
  for (const auto& [fqn, param] : parameters())
    if (param.is_meta()) throw std::logic_error("parallel: the plan names no layer holding " + fqn);
  if (dims_.tp > 1) {
    tp_ = std::make_unique<TensorParallel>(comm_->group("tp"), options.loss_parallel);
    for (const auto& part : parts_) tp_hooks_.insert(tp_hooks_.end(), part.plan.tensor_parallel_hooks.begin(),
                                                     part.plan.tensor_parallel_hooks.end());
    for (auto* slot : tp_hooks_) *slot = tp_.get();
  }
  if (dims_.cp > 1) {
    cp_ = std::make_unique<ContextParallel>(comm_->group("cp"), options.seq_len, options.cp_head_tail, options.cp_rotate_method);
    for (const auto& part : parts_) cp_hooks_.insert(cp_hooks_.end(), part.plan.context_parallel_hooks.begin(),
                                                     part.plan.context_parallel_hooks.end());
    for (auto* slot : cp_hooks_) *slot = cp_.get();
  }
  if (dims_.ep > 1) {
    // With etp 1 the experts borrow the tp ranks, which see one replicated sequence: they split its tokens.
    const bool borrows_tp = dims_.etp == 1 && dims_.tp > 1;
    ep_ = std::make_unique<ExpertParallel>(comm_->group("ep"), borrows_tp ? dims_.tp : 1,
                                           borrows_tp ? dims_.coordinate(rank_, MeshDim::kTP) : 0);
    for (const auto& part : parts_) ep_hooks_.insert(ep_hooks_.end(), part.plan.expert_parallel_hooks.begin(),
                                                     part.plan.expert_parallel_hooks.end());
    for (auto* slot : ep_hooks_) *slot = ep_.get();
  }
  if (sharded) {
    options.fsdp.pipelined = dims_.pp > 1;
    for (const auto& part : parts_)
      fsdp_.push_back(std::make_unique<FullyShardedModel>(part.module, part.plan, shardings, options.fsdp));
  } else if (dims_.dp_replicate > 1) {
    ddp_ = std::make_unique<DistributedDataParallel>(parameters(), comm_->group("dp_replicate"));
  }
}

ParallelizedModel::~ParallelizedModel() {
  for (auto* slot : tp_hooks_) *slot = nullptr;
  for (auto* slot : cp_hooks_) *slot = nullptr;
  for (auto* slot : ep_hooks_) *slot = nullptr;
}

torch::Tensor ParallelizedModel::shard_sequence(const torch::Tensor& batch) const { return cp_ ? cp_->shard(batch) : batch; }

std::vector<std::pair<std::string, torch::Tensor>> ParallelizedModel::parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& part : parts_)
    for (const auto& p : part.module->named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

const Placement& ParallelizedModel::placement(const std::string& fqn) const {
  auto it = placements_.find(fqn);
  if (it == placements_.end()) throw std::out_of_range("parallel: no parameter " + fqn);
  return it->second;
}

Placement::Piece ParallelizedModel::piece(const std::string& fqn) const { return placement(fqn).piece(dims_, rank_); }

bool ParallelizedModel::owns(const std::string& fqn) const { return placement(fqn).owned_by(dims_, rank_); }

bool ParallelizedModel::owns_first_piece(const std::string& fqn) const {
  const auto offsets = piece(fqn).offsets;
  return owns(fqn) && std::all_of(offsets.begin(), offsets.end(), [](int64_t o) { return o == 0; });
}

void ParallelizedModel::zero_grad() {
  for (auto& [fqn, p] : parameters()) p.mutable_grad() = torch::Tensor();
  if (ddp_) ddp_->zero_grad();
}

void ParallelizedModel::set_gradient_sync(bool sync) {
  if (ddp_) ddp_->set_sync(sync);
}

void ParallelizedModel::finish_gradient_sync() {
  if (ddp_) ddp_->finish_gradient_sync();
  for (auto& fsdp : fsdp_) fsdp->reduce_gradients();  // unless pipelined, each unit reduced as its backward ended
  if (!tp_) return;
  // Sequence-parallel norms saw a slice of the sequence on each tp rank: their gradients add up.
  for (auto& [fqn, p] : parameters())
    if (tp_layouts_.at(fqn).replicated() && p.grad().defined()) {
      auto grad = p.grad();
      comm_->group("tp").all_reduce(grad);
    }
}

double ParallelizedModel::grad_norm() {
  std::vector<torch::Tensor> params;
  std::vector<bool> counted;
  for (const auto& [fqn, p] : parameters()) {
    params.push_back(p);
    counted.push_back(owns(fqn));
  }
  std::function<double(double)> across;  // every piece has one owner: one sum over the world
  if (comm_) across = [this](double sq) { return comm_->world().all_reduce_sum(sq); };
  return titan::grad_norm(params, counted, across);
}

std::vector<std::pair<std::string, torch::Tensor>> ParallelizedModel::full_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;  // whole over the data-parallel ranks
  if (fsdp_.empty()) out = parameters();
  for (auto& fsdp : fsdp_)
    for (auto& p : fsdp->full_parameters()) out.push_back(std::move(p));
  torch::NoGradGuard no_grad;
  if (tp_)
    for (auto& [fqn, t] : out) {
      const TpLayout layout = tp_layouts_.at(fqn);
      const bool borrowed = ep_sharded_.count(fqn) && dims_.etp == 1;  // experts whole over the tp ranks they borrow
      if (!layout.replicated() && !borrowed) t = gather_pieces(comm_->group("tp"), t, *layout.dim);
    }
  if (ep_)
    for (auto& [fqn, t] : out)
      if (ep_sharded_.count(fqn)) t = gather_pieces(comm_->group("ep"), t, 0);  // each ep rank's experts
  if (dims_.pp > 1) gather_stages_to_rank0(out);
  return out;
}

void ParallelizedModel::gather_stages_to_rank0(std::vector<std::pair<std::string, torch::Tensor>>& out) {
  ProcessGroup& pp = comm_->group("pp");
  if (pp.ranks().front() != 0) return;  // only rank 0's pipeline peers: rank 0 writes the export
  const std::string key = "full_parameters/" + std::to_string(gathers_++) + "/pp";
  if (pp.rank() > 0) {  // the names and shapes through the store, then the tensors in that order
    nlohmann::json index = nlohmann::json::array();
    for (const auto& [fqn, t] : out) index.push_back({fqn, t.sizes().vec()});
    comm_->store_set(key + std::to_string(pp.rank()), index.dump());
    for (size_t i = 0; i < out.size(); ++i) pp.start_send(out[i].second, 0, static_cast<int64_t>(i))();
    return;
  }
  const auto options = out.empty() ? torch::TensorOptions() : out.front().second.options();
  for (int64_t peer = 1; peer < pp.size(); ++peer) {
    const std::string peer_key = key + std::to_string(peer);
    const auto index = nlohmann::json::parse(comm_->store_get(peer_key));
    comm_->store_delete(peer_key);
    for (size_t i = 0; i < index.size(); ++i) {
      auto t = torch::empty(index[i][1].get<std::vector<int64_t>>(), options);
      pp.recv(t, peer, static_cast<int64_t>(i));
      out.emplace_back(index[i][0].get<std::string>(), t);
    }
  }
}

}  // namespace titan
