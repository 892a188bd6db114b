// TorchTitan's checkpoint manager: save at intervals and at the last step, keep the newest k,
// resume at load_step (or the newest complete step), initial loads, exclude_from_loading,
// model-only exports, seed checkpoints and async saves; with the fixes listed in DESIGN.md.
#pragma once

#include <functional>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_format.h"
#include "models/common/torch_api.h"
#include "models/llama3/model_args.h"
#include "parallel/collectives.h"

namespace titan::checkpoint {

// The [checkpoint] keys the manager acts on (filled from the job config by the trainer).
struct Options {
  bool enable = false;
  std::string folder;  // {job.dump_folder}/{checkpoint.folder}
  int64_t interval = 500;
  std::optional<std::string> initial_load_path;
  bool initial_load_model_only = true;
  bool last_save_model_only = true;
  torch::ScalarType export_dtype = torch::kFloat32;
  std::string async_mode = "disabled";  // disabled | async | async_with_pinned_mem
  int64_t keep_latest_k = 10;
  int64_t load_step = -1;
  std::vector<std::string> exclude_from_loading;
  bool enable_first_step_checkpoint = false;
  bool load_only = false;
  // Hugging Face interop (model only): read initial_load_path (else hf_assets_path) as an HF
  // folder; write the last save as one.
  bool initial_load_in_hf = false;
  bool last_save_in_hf = false;
  std::string hf_assets_path;
  int64_t hf_max_shard_bytes = 5'000'000'000;
  llama3::ModelArgs model_args;  // for the q/k permutation and config.json
  // Several ranks: each writes the pieces it holds with save_here, rank 0 gathers their chunk
  // lists through the store and writes the manifest last, then purges. Null for one process.
  Collectives* comm = nullptr;
  std::chrono::seconds save_timeout{300};  // how long ranks wait for each other's synchronous saves
  // Whole model tensors for a Hugging Face export when the model part holds shards (a
  // collective: every rank calls it).
  std::function<std::vector<ShardedTensor>()> full_model;
};

// What one part of the training state saves: its tensors (live ones: a load copies into them)
// and its plain state, together.
struct PartState {
  std::vector<ShardedTensor> tensors;
  nlohmann::json state = nlohmann::json::object();
};

// One part of the training state, as TorchTitan's stateful objects (model, optimizer,
// lr_scheduler, dataloader, train_state). A load fills in what save() returned, tensors and
// state, and hands that to load().
struct Part {
  std::function<PartState()> save;
  std::function<void(const PartState&)> load = [](const PartState&) {};
};

// The parts by name; they are saved, loaded and logged in the order they were added.
class Parts {
 public:
  Part& add(const std::string& name);  // throws std::logic_error for a name added twice
  const Part& at(const std::string& name) const;
  bool has(const std::string& name) const;
  const std::vector<std::pair<std::string, Part>>& all() const { return parts_; }

 private:
  std::vector<std::pair<std::string, Part>> parts_;
};

struct LoadResult {
  bool loaded = false;
  std::string from;  // the folder it came from
  int64_t step = 0;  // the checkpoint's step
  std::vector<std::string> loaded_parts, skipped_parts;
};

class CheckpointManager {
 public:
  // `info` is written into every manifest (config, world size, ...).
  CheckpointManager(Options options, Parts parts, nlohmann::json info);
  ~CheckpointManager();  // waits for an in-flight async save
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Applies the load rules; throws std::runtime_error with a one-line reason on a bad request.
  LoadResult load();

  bool should_save(int64_t step, bool last_step) const;
  // Saves step `step` if should_save, then keeps the newest keep_latest_k. The last step is
  // always synchronous (and, unlike TorchTitan, purges too: keep_latest_k holds at the end).
  void save(int64_t step, bool last_step);
  // Step-0 of a seed checkpoint: the last-step path (model-only with export_dtype if so set).
  void save_seed();
  // Waits for an in-flight async save; rethrows its error.
  void wait();

  std::string step_dir(int64_t step) const;
  // Steps with a manifest, ascending.
  std::vector<int64_t> complete_steps() const;

 private:
  struct Snapshot {
    int64_t step;
    std::vector<ShardedTensor> tensors;
    Manifest manifest;
  };
  Snapshot snapshot(int64_t step, bool model_only, bool stage_copies);
  void write(const Snapshot& s, bool purge_after);
  void purge(int64_t just_written);
  // One run per checkpoint folder (rank 0 holds an flock on {folder}/.lock for the run's life);
  // throws std::runtime_error naming the holder's pid.
  void lock_folder();
  void wait_for_writers();
  LoadResult load_from(const std::string& dir, bool model_only);
  Options options_;
  Parts parts_;
  nlohmann::json info_;
  std::future<void> in_flight_;
  std::map<std::string, torch::Tensor> staging_;  // reused buffers for async_with_pinned_mem
  int lock_fd_ = -1;  // the folder lock (rank 0 of a run that saves)
};

// exclude_from_loading and the other cross-key rules; throws std::invalid_argument.
void validate_options(const Options& options);

}  // namespace titan::checkpoint
