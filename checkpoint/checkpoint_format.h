// The native checkpoint: step-N/ holds one safetensors file per writing rank (__{rank}_0.safetensors)
// and a JSON manifest `.metadata`, written last (tmp + fsync + rename), that lists every tensor's
// dtype, global shape and chunks (file, global offsets, sizes, byte range, CRC-32) plus the
// non-tensor state. Any saved sharding loads into any target sharding: a reader copies the
// overlap of each saved chunk with the piece it owns.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"

namespace titan::checkpoint {

inline constexpr const char* kManifestName = ".metadata";

// A tensor (or this rank's piece of one) to save or to load into.
struct ShardedTensor {
  std::string key;                    // "layers.0.attention.wq.weight", "optimizer.state.<fqn>.exp_avg"
  torch::Tensor local;                // the piece this rank holds; any device
  std::vector<int64_t> global_shape;  // empty = local.sizes() (unsharded)
  std::vector<int64_t> offsets;       // of `local` in the global tensor; empty = zeros
  bool save_here = true;              // false where another rank saves the same piece (replicas)

  static ShardedTensor whole(std::string key, torch::Tensor t) { return {std::move(key), std::move(t), {}, {}, true}; }
};

struct Chunk {
  std::string file;
  std::vector<int64_t> offsets, sizes;
  int64_t begin = 0, end = 0;  // absolute byte range in `file`
  uint32_t crc32 = 0;
};

struct TensorEntry {
  std::string dtype;  // safetensors name, e.g. "F32"
  std::vector<int64_t> shape;
  std::vector<Chunk> chunks;
};

struct Manifest {
  std::string container = "safetensors";  // or "dcp": a PyTorch Distributed Checkpoint read by dcp_reader
  int64_t step = 0;
  bool model_only = false;
  std::map<std::string, TensorEntry> tensors;
  nlohmann::json state = nlohmann::json::object();  // train_state, lr_scheduler, dataloader, optimizer groups, ...
  nlohmann::json info = nlohmann::json::object();   // world size, mesh, config: for people and tools
};

// Writes this rank's pieces to dir/__{rank}_0.safetensors (fsynced) and returns their entries.
// A previous manifest in `dir` is removed first, so a crash never leaves stale data behind one.
std::map<std::string, TensorEntry> write_shard(const std::string& dir, const std::vector<ShardedTensor>& tensors,
                                               int64_t rank);

// Adds `entries` (e.g. gathered from every rank) to the manifest's chunks.
void merge_entries(Manifest& manifest, const std::map<std::string, TensorEntry>& entries);

// The manifest's "tensors" object, also how ranks send their entries to the manifest writer.
nlohmann::json entries_to_json(const std::map<std::string, TensorEntry>& entries);
std::map<std::string, TensorEntry> entries_from_json(const nlohmann::json& tensors);  // throws on bad fields

// Writes the manifest last: .metadata.tmp, fsync, rename, fsync of the folder.
void write_manifest(const std::string& dir, const Manifest& manifest);

// Writes dir/name as the file that completes a folder: name.tmp, fsync, rename, fsync of the folder
// (whose data files are synced first). Throws std::runtime_error naming the file.
void write_last(const std::string& dir, const std::string& name, const std::string& bytes);

// One process writing everything: write_shard as rank 0, then write_manifest.
// Throws std::runtime_error naming the file on I/O errors.
void write_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& tensors, Manifest manifest);

// True when dir holds a manifest (the checkpoint is complete).
bool is_complete(const std::string& dir);

// step-N folders under `folder`, complete or not, ascending by N.
std::vector<std::pair<int64_t, std::filesystem::path>> step_folders(const std::string& folder);

// Removes a step folder with `marker` (the file that makes it look complete: the manifest, or an
// HF export's index) first and fsynced, so a kill midway leaves an incomplete folder, never one
// that looks complete without its data. Throws std::runtime_error naming the folder.
void retire_folder(const std::string& dir, const std::string& marker);

// Reads and checks dir/.metadata: our JSON manifest, or a DCP folder's pickle (dcp_reader).
// Throws std::runtime_error naming the folder.
Manifest read_manifest(const std::string& dir);

// Fills each target's `local` with its piece of the saved tensor, checking shapes, coverage and
// CRC-32s. Throws std::runtime_error naming the key and file on a missing key, shape mismatch,
// missing piece or corrupt data.
void load_tensors(const std::string& dir, const Manifest& manifest, std::vector<ShardedTensor>& targets);

}  // namespace titan::checkpoint
