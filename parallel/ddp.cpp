#include "parallel/ddp.h"

#include <torch/csrc/autograd/function_hook.h>

#include <mutex>
#include <stdexcept>

namespace titan {

struct DistributedDataParallel::State {
  struct Bucket {
    torch::Tensor flat;           // (numel) the bucket's gradients, back to back
    std::vector<size_t> members;  // parameter indices
    size_t ready = 0;
  };
  ProcessGroup* group = nullptr;
  std::vector<std::string> names;
  std::vector<torch::Tensor> params, views;  // views: each parameter's slice of its bucket
  std::vector<size_t> bucket_of;
  std::vector<bool> is_ready;
  std::vector<Bucket> buckets;
  std::vector<std::function<void()>> in_flight;
  size_t next_bucket = 0;  // buckets start in index order
  size_t started_during_backward = 0, last_started_during_backward = 0;
  bool sync = true;
  std::mutex mutex;

  void start_ready_buckets() {
    while (next_bucket < buckets.size() && buckets[next_bucket].ready == buckets[next_bucket].members.size()) {
      in_flight.push_back(group->start_all_reduce_sum(buckets[next_bucket++].flat));
    }
  }

  void mark_ready(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!sync) return;
    if (is_ready[i])  // a second gradient for a bucket that may be on the wire would be lost
      throw std::logic_error("DDP: the gradient of " + names[i] + " was produced twice in one backward");
    is_ready[i] = true;
    ++buckets[bucket_of[i]].ready;
    start_ready_buckets();
    started_during_backward = next_bucket;
  }
};

namespace {

// Runs after a parameter's AccumulateGrad: its .grad (a bucket view) holds this backward's gradient.
struct GradReadyHook : public torch::autograd::FunctionPostHook {
  GradReadyHook(std::weak_ptr<DistributedDataParallel::State> state, size_t index)
      : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override {
    if (auto s = state_.lock()) s->mark_ready(index_);
    return outputs;
  }
  std::weak_ptr<DistributedDataParallel::State> state_;
  size_t index_;
};

}  // namespace

DistributedDataParallel::DistributedDataParallel(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                                                 ProcessGroup& group, int64_t bucket_bytes)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.group = &group;
  for (const auto& [name, p] : params) {
    if (!p.requires_grad()) continue;
    s.names.push_back(name);
    s.params.push_back(p);
  }
  const size_t n = s.params.size();
  s.bucket_of.assign(n, 0);
  s.views.resize(n);
  s.is_ready.assign(n, false);
  // Reverse order: the output layer's gradient comes first in backward, the embedding's last.
  std::vector<size_t> current;
  int64_t bytes = 0;
  auto close_bucket = [&] {
    if (current.empty()) return;
    int64_t numel = 0;
    for (size_t i : current) numel += s.params[i].numel();
    State::Bucket b;
    b.flat = torch::zeros({numel}, s.params[current.front()].options());  // (numel)
    int64_t offset = 0;
    for (size_t i : current) {
      s.views[i] = b.flat.narrow(0, offset, s.params[i].numel()).view(s.params[i].sizes());
      s.bucket_of[i] = s.buckets.size();
      offset += s.params[i].numel();
    }
    b.members = current;
    s.buckets.push_back(std::move(b));
    current.clear();
    bytes = 0;
  };
  for (size_t k = n; k-- > 0;) {
    const auto& p = s.params[k];
    if (!current.empty() && p.scalar_type() != s.params[current.front()].scalar_type()) close_bucket();
    current.push_back(k);
    bytes += static_cast<int64_t>(p.nbytes());
    if (bytes >= bucket_bytes) close_bucket();
  }
  close_bucket();
  for (size_t i = 0; i < n; ++i) {
    auto acc = torch::autograd::impl::grad_accumulator(s.params[i]);  // the variable holds it weakly: keep it
    const uintptr_t key = acc->add_post_hook(std::make_unique<GradReadyHook>(state_, i));
    hooks_.emplace_back(std::move(acc), key);
  }
  zero_grad();
}

DistributedDataParallel::~DistributedDataParallel() {
  for (auto& [acc, key] : hooks_) acc->del_post_hook(key);
}

void DistributedDataParallel::zero_grad() {
  torch::NoGradGuard no_grad;
  State& s = *state_;
  for (auto& b : s.buckets) b.flat.zero_();
  for (size_t i = 0; i < s.params.size(); ++i) s.params[i].mutable_grad() = s.views[i];
}

void DistributedDataParallel::set_sync(bool sync) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->sync = sync;
}

void DistributedDataParallel::finish_gradient_sync() {
  State& s = *state_;
  std::vector<std::function<void()>> waits;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.last_started_during_backward = s.started_during_backward;
    s.started_during_backward = 0;
    for (auto& b : s.buckets) b.ready = b.members.size();  // unused parameters contribute their zeros
    s.start_ready_buckets();
    waits.swap(s.in_flight);
    s.next_bucket = 0;
    for (auto& b : s.buckets) b.ready = 0;
    std::fill(s.is_ready.begin(), s.is_ready.end(), false);
  }
  for (auto& wait : waits) wait();
  for (size_t i = 0; i < s.params.size(); ++i)
    if (!s.params[i].grad().defined() || s.params[i].grad().data_ptr() != s.views[i].data_ptr())
      throw std::logic_error("DDP: the gradient of " + s.names[i] +
                             " is no longer its bucket view (was .grad replaced?)");
}

int64_t DistributedDataParallel::num_buckets() const {
  return static_cast<int64_t>(state_->buckets.size());
}

int64_t DistributedDataParallel::buckets_started_during_backward() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return static_cast<int64_t>(state_->last_started_during_backward);
}

}  // namespace titan
