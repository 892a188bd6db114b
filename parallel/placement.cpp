#include "parallel/placement.h"

#include <algorithm>
#include <stdexcept>

namespace titan {

std::pair<int64_t, int64_t> chunk_rows(int64_t n, int64_t parts, int64_t part) {
  const int64_t chunk = (n + parts - 1) / parts;
  const int64_t begin = std::min(n, part * chunk);
  return {begin, std::min(n, begin + chunk) - begin};
}

namespace {

const char* mesh_dim_name(MeshDim d) {
  switch (d) {
    case MeshDim::kPP: return "pp";
    case MeshDim::kDPReplicate: return "dp_replicate";
    case MeshDim::kDPShard: return "dp_shard";
    case MeshDim::kCP: return "cp";
    case MeshDim::kTP: return "tp";
    case MeshDim::kEFSDP: return "efsdp";
    case MeshDim::kEP: return "ep";
    case MeshDim::kETP: return "etp";
  }
  return "?";
}

// The rank's index in the group of `mesh_dims` and the group's size (the dims flattened in order).
std::pair<int64_t, int64_t> group_coordinate(const ParallelDims& dims, int64_t rank, const std::vector<MeshDim>& mesh_dims) {
  int64_t index = 0, size = 1;
  for (MeshDim d : mesh_dims) {
    index = index * dims.size(d) + dims.coordinate(rank, d);
    size *= dims.size(d);
  }
  return {index, size};
}

}  // namespace

Placement::Piece Placement::piece(const ParallelDims& dims, int64_t rank) const {
  Piece p{std::vector<int64_t>(global_shape.size(), 0), global_shape};
  for (const Split& s : splits) {
    const auto d = static_cast<size_t>(s.tensor_dim);
    const auto [index, parts] = group_coordinate(dims, rank, s.mesh_dims);
    if (s.uneven) {
      const auto [begin, count] = chunk_rows(p.sizes[d], parts, index);
      p.offsets[d] += begin;
      p.sizes[d] = count;
    } else {
      if (p.sizes[d] % parts != 0)
        throw std::invalid_argument("a tensor of shape " + describe() + " cannot be split evenly: dim " +
                                    std::to_string(d) + " has " + std::to_string(p.sizes[d]) + " for " +
                                    std::to_string(parts) + " ranks");
      p.sizes[d] /= parts;
      p.offsets[d] += index * p.sizes[d];
    }
  }
  return p;
}

bool Placement::owned_by(const ParallelDims& dims, int64_t rank) const {
  bool experts = false;  // a routed expert's placement names the experts' mesh
  for (const Split& s : splits) experts = experts || std::any_of(s.mesh_dims.begin(), s.mesh_dims.end(), is_expert_dim);
  for (MeshDim dim : mesh_basis(experts)) {
    bool cut = false;
    for (const Split& s : splits) cut = cut || std::find(s.mesh_dims.begin(), s.mesh_dims.end(), dim) != s.mesh_dims.end();
    const int64_t holder = dim == MeshDim::kPP && pp_rank ? *pp_rank : 0;
    if (!cut && dims.coordinate(rank, dim) != holder) return false;
  }
  return true;
}

std::string Placement::describe() const {
  std::string out = "(";
  for (size_t i = 0; i < global_shape.size(); ++i) out += (i ? ", " : "") + std::to_string(global_shape[i]);
  out += ")";
  for (const Split& s : splits) {
    out += " dim " + std::to_string(s.tensor_dim) + " over ";
    for (size_t i = 0; i < s.mesh_dims.size(); ++i) out += std::string(i ? " x " : "") + mesh_dim_name(s.mesh_dims[i]);
    if (s.uneven) out += " (uneven)";
  }
  if (pp_rank) out += " on pp rank " + std::to_string(*pp_rank);
  return out;
}

}  // namespace titan
