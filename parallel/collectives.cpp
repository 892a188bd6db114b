#include "parallel/collectives.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "parallel/logging.h"
#include "parallel/rank_exit.h"

#include <cstdio>
#include <cstdlib>
#include <future>
#include <stdexcept>
#include <thread>

namespace titan {
namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// c10d's client connects and then validates, each under the full timeout (a 10 s timeout took
// 22 s): our own deadline bounds the whole rendezvous. Past it the connecting thread cannot be
// stopped, so the process ends here, as after a failed collective.
c10::intrusive_ptr<c10d::Store> connect_store(const std::string& addr, const c10d::TCPStoreOptions& opts,
                                              const std::string& failure) {
  auto result = std::make_shared<std::promise<c10::intrusive_ptr<c10d::Store>>>();
  auto ready = result->get_future();
  std::thread([result, addr, opts] {
    try {
      result->set_value(c10::make_intrusive<c10d::TCPStore>(addr, opts));
    } catch (...) {
      result->set_exception(std::current_exception());
    }
  }).detach();
  if (ready.wait_for(opts.timeout) == std::future_status::ready) return ready.get();
  log_error(failure + ": not every rank arrived in time");
  std::fflush(nullptr);
  std::_Exit(1);
}

}  // namespace

Collectives::Collectives(const RankEnv& env, const ParallelDims& dims, std::chrono::seconds timeout, torch::Device device)
    : rank_(env.rank), timeout_(std::make_shared<std::chrono::milliseconds>(timeout)) {
  const std::string addr = env_or("MASTER_ADDR", "127.0.0.1");
  const std::string port_text = env_or("MASTER_PORT", "");
  if (port_text.empty()) throw std::runtime_error("MASTER_PORT is not set: launch several ranks with ./run_train.sh (NGPU=N)");
  const std::string agent_store = env_or("TORCHELASTIC_USE_AGENT_STORE", "");
  const bool agent_serves = agent_store == "True" || agent_store == "true" || agent_store == "1";
  c10d::TCPStoreOptions opts;
  char* end = nullptr;
  const long port = std::strtol(port_text.c_str(), &end, 10);
  if (*end != '\0' || port < 1 || port > 65535)
    throw std::runtime_error("MASTER_PORT='" + port_text + "' is not a port number (1-65535)");
  opts.port = static_cast<uint16_t>(port);
  opts.isServer = rank_ == 0 && !agent_serves;
  opts.numWorkers = agent_serves ? std::nullopt : std::optional<size_t>(static_cast<size_t>(env.world_size));
  opts.waitWorkers = !agent_serves;
  opts.timeout = timeout;
  const std::string failure = "rendezvous at " + addr + ":" + port_text + " failed within comm.init_timeout_seconds=" +
                              std::to_string(timeout.count()) + " (rank " + std::to_string(rank_) + " of " +
                              std::to_string(env.world_size) + ")";
  try {
    store_ = connect_store(addr, opts, failure);
    // torchrun restarts every worker after a failure; each attempt meets under fresh keys.
    if (agent_serves)
      store_ = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + env_or("TORCHELASTIC_RESTART_COUNT", "0"), store_);
    std::vector<int64_t> all(static_cast<size_t>(env.world_size));
    for (int64_t r = 0; r < env.world_size; ++r) all[static_cast<size_t>(r)] = r;
    set_rank_exit_store(store_, rank_, env.world_size);
    groups_["world"] = std::make_shared<ProcessGroup>("world", all, rank_, store_, timeout_, device);
    groups_["world_cpu"] = device.is_cpu() ? groups_["world"]
                                           : std::make_shared<ProcessGroup>("world_cpu", all, rank_, store_, timeout_);
    // Every rank builds its groups in the same order; a group equal to one built already is shared.
    const std::vector<std::pair<std::string, std::vector<MeshDim>>> wanted = {
        {"pp", {MeshDim::kPP}},
        {"dp_replicate", {MeshDim::kDPReplicate}},
        {"dp_shard", {MeshDim::kDPShard}},
        {"cp", {MeshDim::kCP}},
        {"tp", {MeshDim::kTP}},
        {"dp", {MeshDim::kDPReplicate, MeshDim::kDPShard}},                  // the batch: ranks reading different data
        {"fsdp", {MeshDim::kDPShard, MeshDim::kCP}},                         // parameters are sharded over it
        {"loss", {MeshDim::kDPReplicate, MeshDim::kDPShard, MeshDim::kCP}},  // the loss is averaged over it
        {"ep", {MeshDim::kEP}},        // routed experts' token slots travel over it
        {"efsdp", {MeshDim::kEFSDP}},  // FSDP shards the routed experts over it
    };
    for (const auto& [name, mesh_dims] : wanted) {
      const auto ranks = dims.group_ranks(rank_, mesh_dims);
      std::shared_ptr<ProcessGroup> same;
      for (const auto& [other, group] : groups_)
        if (group->ranks() == ranks && group->device() == device) same = group;
      groups_[name] = same ? same : std::make_shared<ProcessGroup>(name, ranks, rank_, store_, timeout_, device);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(failure + ": " + first_line(e.what()));
  }
}

Collectives::~Collectives() = default;

ProcessGroup& Collectives::group(const std::string& name) const {
  auto it = groups_.find(name);
  if (it == groups_.end()) throw std::logic_error("no process group '" + name + "'");
  return *it->second;
}

void Collectives::set_timeout(std::chrono::seconds timeout) {
  for (const auto& [name, group] : groups_) group->set_timeout(timeout);  // shared groups are set twice: harmless
  std::lock_guard<std::mutex> lock(store_mutex_);
  store_->setTimeout(timeout);
}

void Collectives::store_set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(store_mutex_);
  store_->set(key, std::vector<uint8_t>(value.begin(), value.end()));
}

std::string Collectives::store_get(const std::string& key) {
  std::lock_guard<std::mutex> lock(store_mutex_);
  try {
    const auto bytes = store_->get(key);
    return std::string(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    throw std::runtime_error("waiting for '" + key + "' in the rendezvous store failed or timed out after " +
                             std::to_string(timeout_->count() / 1000) + " s (a rank died or hangs): " + first_line(e.what()));
  }
}

void Collectives::store_delete(const std::string& key) {
  std::lock_guard<std::mutex> lock(store_mutex_);
  store_->deleteKey(key);
}

}  // namespace titan
