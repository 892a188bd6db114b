#include "parallel/fsdp.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "parallel/placement.h"

namespace titan {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Storage that autograd may have saved is freed and refilled in place (FSDP2's resize_(0)), so the
// saved gathered weights cost no memory between a unit's forward and its backward.
void free_storage(const torch::Tensor& t) {
  c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  impl->set_data_ptr_noswap(c10::DataPtr(nullptr, t.device()));
  impl->set_nbytes(0);
}

void allocate_storage(const torch::Tensor& t) {
  c10::StorageImpl* impl = t.storage().unsafeGetStorageImpl();
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  if (impl->nbytes() == bytes) return;
  impl->set_data_ptr_noswap(impl->allocator()->allocate(bytes));
  impl->set_nbytes(bytes);
}

// A second handle on t's memory with its own version counter: refilling it leaves the tensors
// autograd saved "unmodified".
torch::Tensor alias_of(const torch::Tensor& t) { return torch::from_blob(t.data_ptr(), t.sizes(), t.options()); }

}  // namespace

struct FsdpParam {
  std::string fqn;
  torch::Tensor shard;  // the registered parameter: this rank's piece, master dtype
  torch::Tensor* slot;  // the module member forward reads
  std::vector<int64_t> global_shape;  // what FSDP gathers: the parameter once TP or EP cut it
  int64_t dim = 0;                    // cut over the shard group: torch.chunk's split
  int64_t outer = 1, inner = 1;       // elements before and after `dim`: a piece is (outer, count, inner)
  int64_t flat_offset = 0;            // in every rank's padded all-gather buffer

  // Rank r's part of `dim` among n ranks: (begin, count).
  std::pair<int64_t, int64_t> chunk(int64_t n, int64_t r) const {
    return chunk_rows(global_shape[static_cast<size_t>(dim)], n, r);
  }
  // `full` (the gathered shape, contiguous) as (outer, size of `dim`, inner): the part [begin, begin +
  // count) of `dim` is narrow(1, begin, count) of it.
  torch::Tensor by_dim(const torch::Tensor& full) const {
    return full.reshape({outer, global_shape[static_cast<size_t>(dim)], inner});
  }
  // Rank r's part (count long on `dim`) in a flat buffer holding every rank's padded part in turn.
  torch::Tensor flat_piece(const torch::Tensor& flat, int64_t padded_numel, int64_t r, int64_t count) const {
    return flat.narrow(0, r * padded_numel + flat_offset, outer * count * inner).view({outer, count, inner});
  }
};

struct FsdpUnit {
  std::vector<FsdpParam> params;
  int64_t padded_numel = 0;  // per rank: sum of outer * ceil(dim size / n) * inner
  bool reshard_after_forward = true;
  bool regather_for_backward = true;  // false when backward never reads the weights (embedding)
  bool kept_until_last_unit = false;  // gathered until the last unit ran (a tied embedding)
  ProcessGroup* shard = nullptr;
  ProcessGroup* replicate = nullptr;
  FsdpOptions options;
  std::vector<torch::Tensor> full;  // the gathered copies forward reads; storage freed while resharded
  std::vector<torch::Tensor> grad_sums;  // pipelined: each parameter's unsharded gradient, summed over microbatches
  torch::Tensor prefetched;           // (n * padded) an all-gather started ahead of need, in param_dtype
  std::function<void()> wait_prefetched;

  // Starts the all-gather of every shard into one (n * padded) buffer in `dtype`.
  std::function<void()> start_gather(torch::ScalarType dtype, torch::Tensor& out) {
    torch::NoGradGuard no_grad;
    const auto opts = params.front().shard.options().dtype(dtype);
    auto in = torch::zeros({padded_numel}, opts);  // (padded)
    for (const auto& p : params)
      in.narrow(0, p.flat_offset, p.shard.numel()).copy_(p.shard.detach().reshape({-1}));
    out = torch::empty({shard->size() * padded_numel}, opts);  // (n * padded)
    return shard->start_all_gather(out, in);
  }

  // The next gather_flat in param_dtype finds it done or on the wire: communication overlaps the
  // compute of the unit before it (forward) or after it (backward).
  void prefetch() {
    if (!wait_prefetched) wait_prefetched = start_gather(options.param_dtype, prefetched);
  }

  torch::Tensor gather_flat(torch::ScalarType dtype) {
    torch::Tensor out;
    if (wait_prefetched && dtype == options.param_dtype) {
      wait_prefetched();
      wait_prefetched = nullptr;
      std::swap(out, prefetched);
      return out;
    }
    start_gather(dtype, out)();
    return out;
  }

  bool is_resharded() const {
    for (const auto& t : full)
      if (t.storage().nbytes() == 0) return true;
    return false;
  }

  // Copies param i's pieces of every rank from a gathered buffer into `dst` (its full shape, contiguous).
  void unpack(const torch::Tensor& flat, size_t i, const torch::Tensor& dst) const {
    const auto& p = params[i];
    const auto pieces = p.by_dim(dst);
    for (int64_t r = 0; r < shard->size(); ++r) {
      const auto [begin, count] = p.chunk(shard->size(), r);
      if (count > 0) pieces.narrow(1, begin, count).copy_(p.flat_piece(flat, padded_numel, r, count));
    }
  }

  std::vector<torch::Tensor> gather_new(torch::ScalarType dtype) {
    auto flat = gather_flat(dtype);
    std::vector<torch::Tensor> out;
    for (size_t i = 0; i < params.size(); ++i) {
      out.push_back(torch::empty(params[i].global_shape, flat.options()));
      unpack(flat, i, out.back());
    }
    return out;
  }

  // Before backward: the freed copies get their memory and values back, same tensors.
  void regather() {
    if (!is_resharded()) return;
    auto flat = gather_flat(options.param_dtype);
    for (size_t i = 0; i < params.size(); ++i) {
      allocate_storage(full[i]);
      unpack(flat, i, alias_of(full[i]));
    }
  }

  void reshard() {
    for (const auto& t : full) free_storage(t);
  }

  // After backward: the shards' gradients, summed over the shard group (then the replicas).
  std::vector<torch::Tensor> reduce_scatter(const variable_list& grads) {
    torch::NoGradGuard no_grad;
    const int64_t n = shard->size();
    const auto opts = params.front().shard.options().dtype(options.reduce_dtype);
    auto in = torch::zeros({n * padded_numel}, opts);
    for (size_t i = 0; i < params.size(); ++i) {
      if (!grads[i].defined()) continue;
      const auto& p = params[i];
      const auto pieces = p.by_dim(grads[i]);
      for (int64_t r = 0; r < n; ++r) {
        const auto [begin, count] = p.chunk(n, r);
        if (count > 0) p.flat_piece(in, padded_numel, r, count).copy_(pieces.narrow(1, begin, count));
      }
    }
    auto out = torch::empty({padded_numel}, opts);
    shard->reduce_scatter_sum(out, in);
    replicate->all_reduce(out);  // HSDP: the replicas' sums
    std::vector<torch::Tensor> shard_grads;
    for (const auto& p : params)
      shard_grads.push_back(out.narrow(0, p.flat_offset, p.shard.numel()).view(p.shard.sizes()).to(p.shard.scalar_type()));
    return shard_grads;
  }

  void point_slots_at(const std::vector<torch::Tensor>& tensors) {
    for (size_t i = 0; i < params.size(); ++i) *params[i].slot = tensors[i];
  }
  void restore_slots() {
    for (auto& p : params) *p.slot = p.shard;
    full.clear();
  }
};

namespace {

// shards -> gathered full parameters; backward reduce-scatters their gradients and frees them.
struct GatherUnit : public torch::autograd::Function<GatherUnit> {
  static variable_list forward(AutogradContext* ctx, int64_t unit_address, at::TensorList shards) {
    ctx->saved_data["unit"] = unit_address;
    (void)shards;  // read through the unit, which holds the same tensors
    auto* unit = reinterpret_cast<FsdpUnit*>(unit_address);
    return unit->gather_new(unit->options.param_dtype);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* unit = reinterpret_cast<FsdpUnit*>(ctx->saved_data["unit"].toInt());
    if (unit->options.pipelined) {  // more microbatches come: sum, reduce once in reduce_gradients()
      torch::NoGradGuard no_grad;
      unit->grad_sums.resize(grads.size());
      for (size_t i = 0; i < grads.size(); ++i) {
        if (!grads[i].defined()) continue;
        auto g = grads[i].to(unit->options.reduce_dtype);
        if (unit->grad_sums[i].defined()) unit->grad_sums[i].add_(g);
        else unit->grad_sums[i] = g.clone();
      }
      return variable_list(grads.size() + 1);
    }
    auto shard_grads = unit->reduce_scatter(grads);
    unit->reshard();
    unit->restore_slots();
    variable_list out = {torch::Tensor()};
    out.insert(out.end(), shard_grads.begin(), shard_grads.end());
    return out;
  }
};

}  // namespace

// Identity on a unit's output whose backward runs first among the unit's: it gathers the unit's
// parameters again before the unit's own backward needs them, and starts the previous unit's.
struct RegatherBeforeBackward : public torch::autograd::Function<RegatherBeforeBackward> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& out, int64_t model_address, int64_t unit) {
    ctx->saved_data["model"] = model_address;
    ctx->saved_data["unit"] = unit;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    reinterpret_cast<FullyShardedModel*>(ctx->saved_data["model"].toInt())->before_backward(ctx->saved_data["unit"].toInt());
    return {grads[0], torch::Tensor(), torch::Tensor()};
  }
};

FullyShardedModel::FullyShardedModel(std::shared_ptr<torch::nn::Module> model, const ParallelPlan& plan,
                                     const std::map<std::string, FsdpSharding>& shardings, FsdpOptions options)
    : model_(std::move(model)), hooks_(plan.hooks) {
  std::map<std::string, torch::Tensor*> slots;
  for (const auto& w : plan.weights) slots[w.fqn] = w.member;
  std::map<std::string, torch::Tensor> params;
  for (auto& item : model_->named_parameters()) params[item.key()] = item.value();
  torch::NoGradGuard no_grad;
  size_t planned = 0;
  for (const FsdpUnitPlan& unit_plan : plan.fsdp_units) {
    auto& groups = units_.emplace_back();
    for (const std::string& fqn : unit_plan.params) {
      auto param_it = params.find(fqn);
      auto slot = slots.find(fqn);
      auto sharding = shardings.find(fqn);
      if (param_it == params.end() || slot == slots.end() || sharding == shardings.end() ||
          sharding->second.unsharded.empty())
        throw std::logic_error("FSDP: planned parameter " + fqn +
                               " is not in the model, has no weight slot or no sharding");
      const FsdpSharding& how = sharding->second;
      auto same_groups = [&](const std::unique_ptr<FsdpUnit>& u) {
        return u->shard == how.shard && u->replicate == how.replicate;
      };
      auto found = std::find_if(groups.begin(), groups.end(), same_groups);
      if (found == groups.end()) {
        auto& unit = *groups.emplace_back(std::make_unique<FsdpUnit>());
        unit.shard = how.shard;
        unit.replicate = how.replicate;
        unit.options = options;
        unit.reshard_after_forward =
            options.reshard_after_forward && unit_plan.reshard_after_forward && !options.pipelined;
        unit.regather_for_backward = unit_plan.regather_for_backward;
        unit.kept_until_last_unit = unit_plan.kept_until_last_unit;
        found = std::prev(groups.end());
      }
      FsdpUnit& unit = **found;
      const int64_t n = unit.shard->size();
      FsdpParam p;
      p.fqn = fqn;
      p.slot = slot->second;
      p.global_shape = how.unsharded;
      p.dim = how.dim;
      if (p.dim < 0 || p.dim >= static_cast<int64_t>(p.global_shape.size()))
        throw std::logic_error("FSDP: " + fqn + " has no dim " + std::to_string(p.dim) + " to shard");
      for (int64_t d = 0; d < static_cast<int64_t>(p.global_shape.size()); ++d) {
        if (d < p.dim) p.outer *= p.global_shape[static_cast<size_t>(d)];
        if (d > p.dim) p.inner *= p.global_shape[static_cast<size_t>(d)];
      }
      p.flat_offset = unit.padded_numel;
      unit.padded_numel += p.outer * ((p.global_shape[static_cast<size_t>(p.dim)] + n - 1) / n) * p.inner;
      p.shard = param_it->second;
      const int64_t count = p.chunk(n, unit.shard->rank()).second;
      if (p.shard.size(p.dim) != count)
        throw std::logic_error("FSDP: " + fqn + " holds " + std::to_string(p.shard.size(p.dim)) + " on dim " +
                               std::to_string(p.dim) + ", its shard has " + std::to_string(count));
      unit.params.push_back(std::move(p));
      ++planned;
    }
  }
  if (planned != params.size()) throw std::logic_error("FSDP: the plan's units miss some of the model's parameters");
  *hooks_ = this;
}

FullyShardedModel::~FullyShardedModel() { *hooks_ = nullptr; }

std::vector<std::pair<std::string, torch::Tensor>> FullyShardedModel::full_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& groups : units_)
    for (auto& u : groups) {
      auto full = u->gather_new(u->params.front().shard.scalar_type());
      for (size_t i = 0; i < full.size(); ++i) out.emplace_back(u->params[i].fqn, full[i]);
    }
  return out;
}

void FullyShardedModel::pre_forward(int64_t unit_index) {
  for (auto& unit : units_.at(static_cast<size_t>(unit_index))) {
    if (unit->options.pipelined && !unit->full.empty()) continue;  // gathered for an earlier microbatch of this step
    // The gathered copies live in the unit: one forward per backward (no second forward of a unit
    // while the first one's graph is alive).
    TORCH_CHECK(unit->full.empty(), "FSDP: unit ", unit_index,
                " ran forward again before the backward of its previous "
                "forward; run backward (or forward under no_grad) between forwards");
    std::vector<torch::Tensor> shards;
    for (const auto& p : unit->params) shards.push_back(p.shard);
    unit->full = GatherUnit::apply(reinterpret_cast<int64_t>(unit.get()), at::TensorList(shards));
    unit->point_slots_at(unit->full);
  }
  if (unit_index + 1 < static_cast<int64_t>(units_.size()))
    for (auto& next : units_[static_cast<size_t>(unit_index + 1)])
      if (next->full.empty()) next->prefetch();
}

void FullyShardedModel::before_backward(int64_t unit_index) {
  for (auto& unit : units_.at(static_cast<size_t>(unit_index)))
    if (unit->regather_for_backward) unit->regather();
  if (unit_index == 0) return;
  for (auto& previous : units_[static_cast<size_t>(unit_index - 1)])
    if (previous->regather_for_backward && previous->is_resharded()) previous->prefetch();
}

void FullyShardedModel::reduce_gradients() {
  torch::NoGradGuard no_grad;
  for (auto& groups : units_)
    for (auto& u : groups) {
      if (!u->grad_sums.empty()) {
        auto shard_grads = u->reduce_scatter(u->grad_sums);  // every rank of the group has run the same backwards
        for (size_t i = 0; i < shard_grads.size(); ++i) {
          torch::Tensor& grad = u->params[i].shard.mutable_grad();
          grad = grad.defined() ? grad + shard_grads[i] : shard_grads[i];
        }
        u->grad_sums.clear();
      }
      if (!u->full.empty()) u->restore_slots();  // the step's gathered weights go
    }
}

torch::Tensor FullyShardedModel::post_forward(int64_t unit_index, torch::Tensor out) {
  auto& groups = units_.at(static_cast<size_t>(unit_index));
  if (groups.empty()) return out;
  if (!torch::GradMode::is_enabled()) {  // no backward will come: release now (units read again: at the end)
    for (auto& unit : groups)
      if (!unit->kept_until_last_unit) unit->restore_slots();
    if (unit_index + 1 == static_cast<int64_t>(units_.size()))
      for (auto& all : units_)
        for (auto& u : all)
          if (u->kept_until_last_unit) u->restore_slots();
    return out;
  }
  for (auto& unit : groups)
    if (unit->reshard_after_forward) unit->reshard();
  return RegatherBeforeBackward::apply(out, reinterpret_cast<int64_t>(this), unit_index);
}

}  // namespace titan
