#include "parallel/collectives.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>
#include <stdexcept>

namespace titan {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

void wait_for(const c10::intrusive_ptr<c10d::Work>& work, const char* what, std::chrono::milliseconds timeout) {
  try {
    work->wait(timeout);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    throw std::runtime_error(std::string(what) + " failed or timed out after " + std::to_string(timeout.count() / 1000) +
                             " s (a rank died or hangs): " + msg.substr(0, msg.find('\n')));
  }
}

}  // namespace

Collectives::Collectives(const RankEnv& env, std::chrono::seconds timeout)
    : rank_(env.rank), world_(env.world_size), timeout_(timeout) {
  const std::string addr = env_or("MASTER_ADDR", "127.0.0.1");
  const std::string port_text = env_or("MASTER_PORT", "");
  if (port_text.empty()) throw std::runtime_error("MASTER_PORT is not set: launch several ranks with ./run_train.sh (NGPU=N)");
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(std::stoi(port_text));
  opts.isServer = rank_ == 0;
  opts.numWorkers = static_cast<int>(world_);
  opts.waitWorkers = true;
  opts.timeout = timeout;
  try {
    store_ = c10::make_intrusive<c10d::TCPStore>(addr, opts);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    options->timeout = timeout;
    pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, static_cast<int>(rank_), static_cast<int>(world_), options);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    throw std::runtime_error("rendezvous at " + addr + ":" + port_text + " failed within comm.init_timeout_seconds=" +
                             std::to_string(timeout.count()) + " (rank " + std::to_string(rank_) + " of " +
                             std::to_string(world_) + "): " + msg.substr(0, msg.find('\n')));
  }
}

Collectives::~Collectives() = default;

void Collectives::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  c10d::AllreduceOptions opts;
  opts.timeout = timeout_;
  wait_for(pg_->allreduce(tensors, opts), "all-reduce", timeout_);
}

double Collectives::all_reduce_sum(double value) {
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kFloat64)};
  all_reduce_sum(t);
  return t[0].item<double>();
}

void Collectives::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  opts.timeout = timeout_;
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one = {t};
    wait_for(pg_->broadcast(one, opts), "broadcast", timeout_);
  }
}

void Collectives::barrier() {
  c10d::BarrierOptions opts;
  opts.timeout = timeout_;
  wait_for(pg_->barrier(opts), "barrier", timeout_);
}

void all_reduce_gradients(const std::vector<torch::Tensor>& params, Collectives& comm) {
  torch::NoGradGuard no_grad;
  constexpr int64_t kBucketBytes = 25 << 20;
  std::vector<torch::Tensor> bucket;
  int64_t bytes = 0;
  auto flush = [&] {
    if (bucket.empty()) return;
    std::vector<torch::Tensor> flats;
    for (const auto& g : bucket) flats.push_back(g.reshape({-1}));
    std::vector<torch::Tensor> flat = {torch::cat(flats)};  // one collective per bucket
    comm.all_reduce_sum(flat);
    int64_t offset = 0;
    for (auto& g : bucket) {
      g.copy_(flat[0].narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
    bucket.clear();
    bytes = 0;
  };
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    bucket.push_back(p.grad());
    bytes += static_cast<int64_t>(p.grad().nbytes());
    if (bytes >= kBucketBytes) flush();
  }
  flush();
}

}  // namespace titan
