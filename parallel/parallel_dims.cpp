#include "parallel/parallel_dims.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <stdexcept>

namespace titan {
namespace {

using Err = std::invalid_argument;

std::string degree_list(const ParallelDims& d) {
  return "dp_replicate(" + std::to_string(d.dp_replicate) + ") * dp_shard(" + std::to_string(d.dp_shard) + ") * cp(" +
         std::to_string(d.cp) + ") * tp(" + std::to_string(d.tp) + ") * pp(" + std::to_string(d.pp) + ")";
}

std::optional<int64_t> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || x < 0) throw Err(std::string("environment variable ") + name + "='" + v + "' is not a non-negative integer");
  return x;
}

}  // namespace

ParallelDims ParallelDims::build(int64_t dp_replicate, int64_t dp_shard, int64_t cp, int64_t tp, int64_t pp, int64_t ep,
                                 int64_t etp, int64_t world_size) {
  ParallelDims d{dp_replicate, dp_shard, cp, tp, pp, ep, etp, world_size};
  auto at_least_one = [](const char* key, int64_t v) {
    if (v < 1) throw Err(std::string("parallelism.") + key + " must be >= 1, got " + std::to_string(v));
  };
  at_least_one("data_parallel_replicate_degree", dp_replicate);
  at_least_one("context_parallel_degree", cp);
  at_least_one("tensor_parallel_degree", tp);
  at_least_one("pipeline_parallel_degree", pp);
  at_least_one("expert_parallel_degree", ep);
  at_least_one("expert_tensor_parallel_degree", etp);
  if (dp_shard == -1) {
    const int64_t others = dp_replicate * cp * tp * pp;
    if (world_size % others != 0)
      throw Err("parallelism: world size " + std::to_string(world_size) + " is not divisible by dp_replicate * cp * tp * pp = " +
                std::to_string(others) + ", so data_parallel_shard_degree = -1 cannot take the leftover ranks");
    d.dp_shard = world_size / others;
  } else if (dp_shard < 1) {
    throw Err("parallelism.data_parallel_shard_degree must be -1 (leftover ranks) or >= 1, got " + std::to_string(dp_shard));
  }
  if (d.dp_replicate * d.dp_shard * d.cp * d.tp * d.pp != world_size)
    throw Err("parallelism: invalid parallel dims: " + degree_list(d) + " != WORLD_SIZE(" + std::to_string(world_size) + ")");
  if (etp != 1 && etp != tp)
    throw Err("parallelism.expert_tensor_parallel_degree must be 1 or tensor_parallel_degree (" + std::to_string(tp) +
              "), got " + std::to_string(etp));
  if (ep > 1 && (d.dp_shard * d.cp * d.tp) % (ep * etp) != 0)
    throw Err("parallelism.expert_parallel_degree " + std::to_string(ep) + " * etp " + std::to_string(etp) +
              " must divide dp_shard * cp * tp = " + std::to_string(d.dp_shard * d.cp * d.tp));
  return d;
}

std::string ParallelDims::describe() const {
  return "dp_replicate=" + std::to_string(dp_replicate) + " dp_shard=" + std::to_string(dp_shard) + " cp=" +
         std::to_string(cp) + " tp=" + std::to_string(tp) + " pp=" + std::to_string(pp) + " (world " +
         std::to_string(world_size) + ")";
}

std::vector<MeshDim> mesh_basis(bool experts) {
  if (experts) return {MeshDim::kPP, MeshDim::kDPReplicate, MeshDim::kEFSDP, MeshDim::kEP, MeshDim::kETP};
  return {MeshDim::kPP, MeshDim::kDPReplicate, MeshDim::kDPShard, MeshDim::kCP, MeshDim::kTP};
}

bool is_expert_dim(MeshDim dim) { return dim == MeshDim::kEFSDP || dim == MeshDim::kEP || dim == MeshDim::kETP; }

int64_t ParallelDims::size(MeshDim dim) const {
  const int64_t sizes[] = {pp, dp_replicate, dp_shard, cp, tp, efsdp(), ep, etp};
  return sizes[static_cast<int>(dim)];
}

int64_t ParallelDims::coordinate(int64_t rank, MeshDim dim) const {
  if (is_expert_dim(dim)) {  // from the index within the (pp, dp_replicate) block
    const int64_t l = rank % (dp_shard * cp * tp);
    if (dim == MeshDim::kETP) return l % etp;
    if (dim == MeshDim::kEP) return l / etp % ep;
    return l / (etp * ep);
  }
  int64_t stride = 1;
  for (int d = static_cast<int>(MeshDim::kTP); d > static_cast<int>(dim); --d) stride *= size(static_cast<MeshDim>(d));
  return rank / stride % size(dim);
}

int64_t ParallelDims::dp_rank(int64_t rank) const {
  return coordinate(rank, MeshDim::kDPReplicate) * dp_shard + coordinate(rank, MeshDim::kDPShard);
}

std::vector<int64_t> ParallelDims::group_ranks(int64_t rank, const std::vector<MeshDim>& dims) const {
  std::vector<int64_t> out;
  for (int64_t other = 0; other < world_size; ++other) {
    bool same = true;
    for (MeshDim dim : mesh_basis(std::any_of(dims.begin(), dims.end(), is_expert_dim))) {
      const bool in_group = std::find(dims.begin(), dims.end(), dim) != dims.end();
      same = same && (in_group || coordinate(other, dim) == coordinate(rank, dim));
    }
    if (same) out.push_back(other);
  }
  return out;
}

RankEnv RankEnv::from_environment() {
  RankEnv e;
  // torchrun first, then Slurm, then Open MPI.
  const char* rank_vars[][4] = {{"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"},
                                {"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE"},
                                {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE",
                                 "OMPI_COMM_WORLD_LOCAL_SIZE"}};
  for (const auto& vars : rank_vars) {
    auto world = env_int(vars[2]);
    if (!world) continue;
    e.world_size = *world;
    e.rank = env_int(vars[0]).value_or(0);
    e.local_rank = env_int(vars[1]).value_or(e.rank);
    e.local_world_size = env_int(vars[3]).value_or(e.world_size);
    break;
  }
  if (e.world_size < 1 || e.rank >= e.world_size)
    throw Err("rank " + std::to_string(e.rank) + " is outside the world size " + std::to_string(e.world_size) +
              " given by the launcher's environment");
  return e;
}

}  // namespace titan
