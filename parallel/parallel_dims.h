// Parallelism degrees and their rules (TorchTitan's ParallelDims): mesh order
// [pp, dp_replicate, dp_shard, cp, tp], dp_shard = -1 takes the leftover ranks, and the product
// must equal the world size. EP is carved out of dp_shard * cp * tp, not a world factor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace titan {

// The mesh dimensions in TorchTitan's order [pp, dp_replicate, dp_shard, cp, tp]; tp varies fastest
// across ranks, so rank = (((pp * R + dp_replicate) * S + dp_shard) * CP + cp) * TP + tp.
// Routed experts see the same ranks as [pp, dp_replicate, efsdp, ep, etp] (TorchTitan's sparse
// mesh): within a (pp, dp_replicate) block the index l = (dp_shard * CP + cp) * TP + tp is also
// (efsdp * EP + ep) * ETP + etp, with efsdp = dp_shard * cp * tp / (ep * etp).
enum class MeshDim { kPP = 0, kDPReplicate = 1, kDPShard = 2, kCP = 3, kTP = 4, kEFSDP = 5, kEP = 6, kETP = 7 };

// The five dims that together name a rank: the dense mesh's, or the experts' when `experts`.
std::vector<MeshDim> mesh_basis(bool experts);
bool is_expert_dim(MeshDim dim);

struct ParallelDims {
  int64_t dp_replicate = 1, dp_shard = 1, cp = 1, tp = 1, pp = 1, ep = 1, etp = 1;
  int64_t world_size = 1;

  // Resolves dp_shard = -1 and checks every rule; throws std::invalid_argument naming the degree.
  static ParallelDims build(int64_t dp_replicate, int64_t dp_shard, int64_t cp, int64_t tp, int64_t pp, int64_t ep,
                            int64_t etp, int64_t world_size);

  int64_t dp() const { return dp_replicate * dp_shard; }  // the batch dimension: ranks reading different data
  int64_t efsdp() const { return dp_shard * cp * tp / (ep * etp); }
  bool any_parallelism() const { return world_size > 1; }
  std::string describe() const;

  int64_t size(MeshDim dim) const;
  int64_t coordinate(int64_t rank, MeshDim dim) const;
  // Which slice of the global batch `rank` reads: its (dp_replicate, dp_shard) coordinate, flattened.
  int64_t dp_rank(int64_t rank) const;
  // The process group of `rank` along `dims` (flattened when several): the ranks that differ from
  // it only in those coordinates (of the experts' basis when `dims` holds an expert dim), ascending. E.g. HSDP 2x2, rank 1: {kDPShard} -> {0, 1},
  // {kDPReplicate} -> {1, 3}, both -> {0, 1, 2, 3}.
  std::vector<int64_t> group_ranks(int64_t rank, const std::vector<MeshDim>& dims) const;  // "dp_replicate=1 dp_shard=2 cp=1 tp=1 pp=1 (world 2)"
};

// Rank layout from the launcher's environment (torchrun, Slurm or Open MPI variables).
struct RankEnv {
  int64_t rank = 0, local_rank = 0, world_size = 1, local_world_size = 1;
  static RankEnv from_environment();  // throws std::invalid_argument on malformed values
};

}  // namespace titan
