#include "parallel/process_group.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "parallel/logging.h"

namespace titan {
namespace {

// An all-gather only copies bytes, and Gloo knows few dtypes: anything but fp32/fp64 travels as bytes.
torch::Tensor as_gatherable(const torch::Tensor& t) {
  const auto type = t.scalar_type();
  return type == torch::kFloat32 || type == torch::kFloat64 ? t : t.view(torch::kUInt8);
}

}  // namespace

ProcessGroup::ProcessGroup(std::string name, std::vector<int64_t> ranks, int64_t global_rank,
                           const c10::intrusive_ptr<c10d::Store>& store, std::shared_ptr<std::chrono::milliseconds> timeout)
    : name_(std::move(name)), ranks_(std::move(ranks)), timeout_(std::move(timeout)) {
  auto it = std::find(ranks_.begin(), ranks_.end(), global_rank);
  if (it == ranks_.end()) throw std::logic_error("rank " + std::to_string(global_rank) + " is not in group " + name_);
  rank_ = it - ranks_.begin();
  if (ranks_.size() == 1) return;
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  options->timeout = *timeout_;
  // Each group meets under its own prefix: the name and its lowest global rank.
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name_ + "/" + std::to_string(ranks_.front()), store);
  pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, static_cast<int>(rank_), static_cast<int>(size()), options);
}

ProcessGroup::~ProcessGroup() = default;

namespace {

// A failed or timed-out collective ends the process at once: its Gloo thread may stay blocked
// in the operation, and the group's destructor would wait for it (up to Gloo's own timeout).
void wait_for(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what, std::chrono::milliseconds timeout) {
  try {
    work->wait(timeout);
  } catch (const std::exception& e) {
    const std::string msg = first_line(e.what());
    if (msg.find("timed out") != std::string::npos || msg.find("Timed out") != std::string::npos)
      log_error(what + " timed out after " + std::to_string(timeout.count() / 1000) + " s (a rank died or hangs)");
    else
      log_error(what + " failed: " + msg);
    std::fflush(nullptr);
    std::_Exit(1);
  }
}

}  // namespace

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) { start_all_reduce_sum(tensors)(); }

std::function<void()> ProcessGroup::start_all_reduce_sum(std::vector<torch::Tensor> tensors) {
  if (!pg_) return [] {};
  c10d::AllreduceOptions opts;
  opts.timeout = *timeout_;
  auto work = pg_->allreduce(tensors, opts);
  return [work, what = "all-reduce over " + name_, timeout = *timeout_] { wait_for(work, what, timeout); };
}

double ProcessGroup::all_reduce_sum(double value) {
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kFloat64)};
  all_reduce_sum(t);
  return t[0].item<double>();
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  if (!pg_) return;
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = *timeout_;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one = {t};
    wait_for(pg_->broadcast(one, opts), "broadcast over " + name_, *timeout_);
  }
}

void ProcessGroup::barrier(std::chrono::milliseconds timeout) {
  if (!pg_) return;
  c10d::BarrierOptions opts;
  opts.timeout = timeout;
  wait_for(pg_->barrier(opts), "barrier over " + name_, timeout);
}

void ProcessGroup::all_gather(torch::Tensor& out, const torch::Tensor& in) { start_all_gather(out, in)(); }

std::function<void()> ProcessGroup::start_all_gather(const torch::Tensor& out, const torch::Tensor& in) {
  const int64_t n = in.numel();
  TORCH_CHECK(out.numel() == n * size() && out.is_contiguous() && in.is_contiguous(), "all_gather: out must be size * n");
  if (!pg_) {
    out.copy_(in);
    return [] {};
  }
  auto flat_out = as_gatherable(out), flat_in = as_gatherable(in);
  const int64_t piece = flat_in.numel();
  std::vector<std::vector<torch::Tensor>> outputs(1);
  for (int64_t r = 0; r < size(); ++r) outputs[0].push_back(flat_out.narrow(0, r * piece, piece));
  std::vector<torch::Tensor> inputs = {flat_in};
  c10d::AllgatherOptions opts;
  opts.timeout = *timeout_;
  auto work = pg_->allgather(outputs, inputs, opts);
  return [work, what = "all-gather over " + name_, timeout = *timeout_] { wait_for(work, what, timeout); };
}

void ProcessGroup::reduce_scatter_sum(torch::Tensor& out, const torch::Tensor& in) {
  const int64_t n = out.numel();
  TORCH_CHECK(in.numel() == n * size() && in.is_contiguous(), "reduce_scatter_sum: in must be size * n");
  if (!pg_) {
    out.copy_(in);
    return;
  }
  // All-to-all hands every rank the n-element pieces addressed to it; summing them in rank order
  // is the reduce-scatter (same traffic as a native one).
  auto received = torch::empty_like(in);
  auto send = in;
  std::vector<int64_t> counts;  // empty = equal splits
  c10d::AllToAllOptions opts;
  opts.timeout = *timeout_;
  wait_for(pg_->alltoall_base(received, send, counts, counts, opts), "reduce-scatter over " + name_, *timeout_);
  out.copy_(received.view({size(), n}).sum(0));
}

}  // namespace titan
