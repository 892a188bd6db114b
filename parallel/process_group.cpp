#include "parallel/rank_exit.h"
#include "parallel/process_group.h"

#include <ATen/record_function.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#if TITAN_CUDA
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <stdexcept>

#include "parallel/logging.h"

namespace titan {
namespace {

c10::intrusive_ptr<c10d::Backend> make_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                               std::chrono::milliseconds timeout, const torch::Device& device) {
  if (device.is_cuda()) {
#if TITAN_CUDA
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = timeout;  // the watchdog's, raised by set_timeout after step 1
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#else
    throw std::invalid_argument("an NCCL process group needs a libtorch built with CUDA (this build has none)");
#endif
  }
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

// A failed or timed-out collective ends the process at once: its Gloo thread may stay blocked
// in the operation, and the group's destructor would wait for it (up to Gloo's own timeout).
[[noreturn]] void end_on_failure(const std::exception& e, const std::string& what, std::chrono::milliseconds timeout) {
  const std::string msg = first_line(e.what());
  // Gloo 2025 says "Application timeout caused pair closure", older ones "Timed out"; c10d "timed out".
  const bool timed_out = msg.find("timed out") != std::string::npos || msg.find("Timed out") != std::string::npos ||
                         msg.find("timeout") != std::string::npos;
  const std::string note = timed_out ? "" : rank_exit_note();  // a closed connection: did a rank say why it left?
  if (timed_out)
    log_error(what + " timed out after " + std::to_string(timeout.count() / 1000) + " s (a rank died or hangs)");
  else
    log_error(what + " failed: " + (note.empty() ? msg : note));
  std::fflush(nullptr);
  std::_Exit(1);
}

// NCCL work is waited on by the GPU stream; its watchdog enforces the timeout.
void wait_for(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what, std::chrono::milliseconds timeout,
              bool nccl) {
  try {
    if (nccl)
      work->wait();
    else
      work->wait(timeout);
  } catch (const std::exception& e) {
    end_on_failure(e, what, timeout);
  }
}

// Starting point-to-point work throws at once when the peer's connection has closed (a dead rank).
c10::intrusive_ptr<c10d::Work> start(const std::function<c10::intrusive_ptr<c10d::Work>()>& issue, const std::string& what,
                                     std::chrono::milliseconds timeout) {
  try {
    return issue();
  } catch (const std::exception& e) {
    end_on_failure(e, what, timeout);
  }
}

c10d::ReduceOp to_c10d(ReduceOp op) { return op == ReduceOp::kMax ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM; }

}  // namespace

ProcessGroup::ProcessGroup(std::string name, std::vector<int64_t> ranks, int64_t global_rank,
                           const c10::intrusive_ptr<c10d::Store>& store, std::shared_ptr<std::chrono::milliseconds> timeout,
                           torch::Device device)
    : name_(std::move(name)), ranks_(std::move(ranks)), timeout_(std::move(timeout)), device_(device),
      nccl_(device.is_cuda()) {
  auto it = std::find(ranks_.begin(), ranks_.end(), global_rank);
  if (it == ranks_.end()) throw std::logic_error("rank " + std::to_string(global_rank) + " is not in group " + name_);
  rank_ = it - ranks_.begin();
  if (ranks_.size() == 1) return;
  // Each group meets under its own prefix: the name and its lowest global rank.
  auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name_ + "/" + std::to_string(ranks_.front()), store);
  pg_ = make_backend(prefixed, static_cast<int>(rank_), static_cast<int>(size()), *timeout_, device_);
}

ProcessGroup::~ProcessGroup() {
  if (pg_ && nccl_) pg_->shutdown();  // as destroy_process_group: NCCL's communicators end cleanly, without its warning
}

void ProcessGroup::set_timeout(std::chrono::milliseconds timeout) {
  *timeout_ = timeout;
  if (pg_) pg_->setTimeout(timeout);
}

void ProcessGroup::all_reduce(torch::Tensor& t, ReduceOp op) {
  if (!pg_) return;
  RECORD_USER_SCOPE("c10d::all_reduce");
  std::vector<torch::Tensor> tensors = {t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = to_c10d(op);
  opts.timeout = *timeout_;
  wait_for(pg_->allreduce(tensors, opts), "all-reduce over " + name_, *timeout_, nccl_);
}

std::function<void()> ProcessGroup::start_all_reduce_sum(torch::Tensor t) {
  if (!pg_) return [] {};
  RECORD_USER_SCOPE("c10d::all_reduce");
  std::vector<torch::Tensor> tensors = {std::move(t)};
  c10d::AllreduceOptions opts;
  opts.timeout = *timeout_;
  auto work = pg_->allreduce(tensors, opts);
  return [work, what = "all-reduce over " + name_, timeout = *timeout_, nccl = nccl_] { wait_for(work, what, timeout, nccl); };
}

double ProcessGroup::all_reduce_sum(double value) {
  return all_reduce_scalar(value, ReduceOp::kSum);
}

double ProcessGroup::all_reduce_max(double value) {
  return all_reduce_scalar(value, ReduceOp::kMax);
}

double ProcessGroup::all_reduce_scalar(double value, ReduceOp op) {
  auto t = torch::tensor({value}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  all_reduce(t, op);
  return t.item<double>();
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  if (!pg_) return;
  RECORD_USER_SCOPE("c10d::broadcast");
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = *timeout_;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one = {t};
    wait_for(pg_->broadcast(one, opts), "broadcast over " + name_, *timeout_, nccl_);
  }
}

void ProcessGroup::barrier(std::chrono::milliseconds timeout) {
  if (!pg_) return;
  RECORD_USER_SCOPE("c10d::barrier");
  c10d::BarrierOptions opts;
  opts.timeout = timeout;
  if (nccl_) opts.device_ids = {device_.index()};
  wait_for(pg_->barrier(opts), "barrier over " + name_, timeout, nccl_);
  if (nccl_) torch::cuda::synchronize(device_.index());  // a barrier is for the host: wait for the GPU too
}

void ProcessGroup::all_gather(torch::Tensor& out, const torch::Tensor& in) { start_all_gather(out, in)(); }

std::function<void()> ProcessGroup::start_all_gather(const torch::Tensor& out, const torch::Tensor& in) {
  const int64_t n = in.numel();
  TORCH_CHECK(out.numel() == n * size() && out.is_contiguous() && in.is_contiguous(), "all_gather: out must be size * n");
  if (!pg_) {
    out.copy_(in);
    return [] {};
  }
  auto flat_out = out.view({-1}), flat_in = in.view({-1});
  RECORD_USER_SCOPE("c10d::all_gather");
  c10d::AllgatherOptions opts;
  opts.timeout = *timeout_;
  c10::intrusive_ptr<c10d::Work> work;
  if (nccl_) {
    work = pg_->_allgather_base(flat_out, flat_in, opts);
  } else {  // into views of out: Gloo's _allgather_base would gather into a temporary and copy
    std::vector<std::vector<torch::Tensor>> outputs(1);
    for (int64_t r = 0; r < size(); ++r) outputs[0].push_back(flat_out.narrow(0, r * n, n));
    std::vector<torch::Tensor> inputs = {flat_in};
    work = pg_->allgather(outputs, inputs, opts);
  }
  return [work, what = "all-gather over " + name_, timeout = *timeout_, nccl = nccl_] { wait_for(work, what, timeout, nccl); };
}

void ProcessGroup::reduce_scatter_sum(torch::Tensor& out, const torch::Tensor& in) {
  const int64_t n = out.numel();
  TORCH_CHECK(in.numel() == n * size() && in.is_contiguous() && out.is_contiguous(), "reduce_scatter_sum: in must be size * n");
  if (!pg_) {
    out.copy_(in);
    return;
  }
  RECORD_USER_SCOPE("c10d::reduce_scatter");
  if (nccl_) {
    auto flat_out = out.view({-1}), flat_in = in.view({-1});
    c10d::ReduceScatterOptions opts;
    opts.timeout = *timeout_;
    wait_for(pg_->_reduce_scatter_base(flat_out, flat_in, opts), "reduce-scatter over " + name_, *timeout_, nccl_);
    return;
  }
  // All-to-all hands every rank the n-element pieces addressed to it; summing them in rank order
  // is the reduce-scatter (same traffic as a ring one).
  auto received = torch::empty({size() * n}, in.options());
  auto send = in.view({-1});
  std::vector<int64_t> equal;  // empty splits: n elements to each rank
  c10d::AllToAllOptions opts;
  opts.timeout = *timeout_;
  wait_for(pg_->alltoall_base(received, send, equal, equal, opts), "reduce-scatter over " + name_, *timeout_, nccl_);
  out.view({-1}).copy_(received.view({size(), n}).sum(0));
}

void ProcessGroup::all_to_all(torch::Tensor& out, const torch::Tensor& in, std::vector<int64_t> out_splits,
                              std::vector<int64_t> in_splits) {
  start_all_to_all(out, in, std::move(out_splits), std::move(in_splits))();
}

std::function<void()> ProcessGroup::start_all_to_all(torch::Tensor& out, const torch::Tensor& in,
                                                     std::vector<int64_t> out_splits, std::vector<int64_t> in_splits) {
  auto rows = [](const std::vector<int64_t>& s) { return std::accumulate(s.begin(), s.end(), int64_t{0}); };
  TORCH_CHECK((out_splits.empty() || static_cast<int64_t>(out_splits.size()) == size()) &&
                  (in_splits.empty() || static_cast<int64_t>(in_splits.size()) == size()),
              "all_to_all: one split per rank of ", name_);
  TORCH_CHECK(out_splits.empty() || rows(out_splits) == out.size(0), "all_to_all: out_splits must add up to out's rows");
  TORCH_CHECK(in_splits.empty() || rows(in_splits) == in.size(0), "all_to_all: in_splits must add up to in's rows");
  if (!pg_) {
    out.copy_(in);
    return [] {};
  }
  auto send = in.contiguous();
  RECORD_USER_SCOPE("c10d::all_to_all");
  c10d::AllToAllOptions opts;
  opts.timeout = *timeout_;
  auto work = pg_->alltoall_base(out, send, out_splits, in_splits, opts);
  // send is kept until the wait: the backend reads it meanwhile
  return [work, send, what = "all-to-all over " + name_, timeout = *timeout_, nccl = nccl_] {
    wait_for(work, what, timeout, nccl);
  };
}

std::function<void()> ProcessGroup::start_send(const torch::Tensor& t, int64_t dst, int64_t tag) {
  TORCH_CHECK(pg_ && dst != rank_ && dst >= 0 && dst < size(), "send: ", dst, " is not another rank of ", name_);
  RECORD_USER_SCOPE("c10d::send");
  std::vector<torch::Tensor> one = {t.contiguous()};
  const std::string what = "send over " + name_ + " to rank " + std::to_string(ranks_[static_cast<size_t>(dst)]);
  auto work = start([&] { return pg_->send(one, static_cast<int>(dst), static_cast<int>(tag)); }, what, *timeout_);
  return [work, one, what, timeout = *timeout_, nccl = nccl_] { wait_for(work, what, timeout, nccl); };
}

void ProcessGroup::recv(torch::Tensor& t, int64_t src, int64_t tag) {
  TORCH_CHECK(pg_ && src != rank_ && src >= 0 && src < size() && t.is_contiguous(), "recv: ", src,
              " is not another rank of ", name_);
  RECORD_USER_SCOPE("c10d::recv");
  std::vector<torch::Tensor> one = {t};
  const std::string what = "receive over " + name_ + " from rank " + std::to_string(ranks_[static_cast<size_t>(src)]);
  wait_for(start([&] { return pg_->recv(one, static_cast<int>(src), static_cast<int>(tag)); }, what, *timeout_), what,
           *timeout_, nccl_);
}

}  // namespace titan
