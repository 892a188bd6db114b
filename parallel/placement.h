// Where a parameter lives on the mesh: its global shape and the cuts that give each rank its piece,
// applied in order (tensor parallelism cuts the full tensor, FSDP then cuts dim 0 of the TP piece,
// as FSDP2 does on a TP module). A mesh dimension that no cut names replicates the parameter.
// Everything about a piece derives from this: its offsets in the global tensor (checkpoint
// chunks), the rank that saves it, and which ranks count it in the gradient norm.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parallel/parallel_dims.h"

namespace titan {

// torch.chunk(n rows, parts)[part] as (first row, row count): ceil(n / parts) rows each, the last
// parts shorter or empty.
std::pair<int64_t, int64_t> chunk_rows(int64_t n, int64_t parts, int64_t part);

// One cut: `tensor_dim` is split among the ranks of the group of `mesh_dims` (their flattened
// coordinate, the group rank), evenly or as torch.chunk does (uneven: FSDP's split).
struct Split {
  std::vector<MeshDim> mesh_dims;
  int64_t tensor_dim = 0;
  bool uneven = false;
};

struct Placement {
  std::vector<int64_t> global_shape;
  std::vector<Split> splits;
  std::optional<int64_t> pp_rank;  // under pipeline parallelism: the pp coordinate whose stage holds it

  struct Piece {
    std::vector<int64_t> offsets, sizes;  // in the global tensor
  };
  // This rank's piece; throws std::invalid_argument when an even cut does not divide its dim.
  Piece piece(const ParallelDims& dims, int64_t rank) const;
  // Each piece has exactly one owner: the rank at coordinate 0 of every mesh dim no cut names
  // (at pp_rank for pp, when set).
  bool owned_by(const ParallelDims& dims, int64_t rank) const;
  std::string describe() const;  // "(64, 256) dim 0 over dp_shard x cp (uneven) on pp rank 1"
};

}  // namespace titan
