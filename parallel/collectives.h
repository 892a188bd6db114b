// The job's distributed runtime: the c10d TCPStore rendezvous, the world group, one process group
// per mesh dimension and per flattened group the trainer needs, and a small key-value exchange
// through the store (checkpoint manifests). The groups run on NCCL when the job's device is a GPU
// and on Gloo on the CPU; host-side coordination (barriers, CPU tensors) has a Gloo world too.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "models/common/torch_api.h"
#include "parallel/parallel_dims.h"
#include "parallel/process_group.h"

namespace c10d {
class Store;
}  // namespace c10d

namespace titan {

class Collectives {
 public:
  // Rendezvous at MASTER_ADDR:MASTER_PORT, then builds the groups of `dims` on `device`. Rank 0
  // hosts the store, unless torchrun's agent already serves it (TORCHELASTIC_USE_AGENT_STORE):
  // then every rank is a client and keys live under /worker/attempt_{restart count}, as in
  // torch.distributed. Throws std::runtime_error naming the address when a rank does not arrive.
  Collectives(const RankEnv& env, const ParallelDims& dims, std::chrono::seconds timeout,
              torch::Device device = torch::kCPU);
  ~Collectives();

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world().size(); }
  // Timeout of every later collective and store wait (comm.train_timeout_seconds after step 1).
  void set_timeout(std::chrono::seconds timeout);

  // "world", one group per mesh dimension ("pp", "dp_replicate", "dp_shard", "cp", "tp", and the
  // experts' "ep" and "efsdp") and the flattened "dp" (batch), "fsdp" (dp_shard x cp) and "loss"
  // (dp x cp), all on the job's device;
  // "world_cpu" over Gloo (the same group as "world" on a CPU job). Throws for other names.
  ProcessGroup& group(const std::string& name) const;
  ProcessGroup& world() const { return group("world"); }
  ProcessGroup& world_cpu() const { return group("world_cpu"); }

  // Key-value exchange through the store; get waits for the key up to the timeout.
  void store_set(const std::string& key, const std::string& value);
  std::string store_get(const std::string& key);
  void store_delete(const std::string& key);

 private:
  int64_t rank_;
  std::shared_ptr<std::chrono::milliseconds> timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::mutex store_mutex_;  // async checkpoint writers use the store from their thread
  std::map<std::string, std::shared_ptr<ProcessGroup>> groups_;
};

}  // namespace titan
