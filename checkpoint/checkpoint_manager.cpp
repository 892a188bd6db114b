#include "checkpoint/checkpoint_manager.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "checkpoint/hf_adapter.h"
#include "checkpoint/hf_checkpoint.h"
#include "parallel/logging.h"

namespace titan::checkpoint {
namespace {

namespace fs = std::filesystem;
using Err = std::runtime_error;

std::string seconds_since(std::chrono::steady_clock::time_point start) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f s", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return buf;
}

const std::vector<std::string>& part_names() {
  static const std::vector<std::string> names = {"model", "optimizer", "lr_scheduler", "dataloader", "train_state"};
  return names;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "nothing" : out;
}

}  // namespace

void validate_options(const Options& o) {
  std::set<std::string> excluded(o.exclude_from_loading.begin(), o.exclude_from_loading.end());
  for (const auto& name : excluded)
    if (std::find(part_names().begin(), part_names().end(), name) == part_names().end())
      throw std::invalid_argument("checkpoint.exclude_from_loading: '" + name + "' is not a state (valid: " +
                                  join(part_names()) + ")");
  if (excluded.count("model"))
    throw std::invalid_argument("checkpoint.exclude_from_loading cannot exclude 'model': a checkpoint load always "
                                "restores the model (disable checkpoint.enable to start from scratch)");
  if (excluded.count("optimizer") && !excluded.count("lr_scheduler"))
    throw std::invalid_argument("checkpoint.exclude_from_loading: excluding 'optimizer' requires excluding 'lr_scheduler' "
                                "too (a fresh optimizer with a restored schedule is not a valid resume)");
  if (o.interval < 1) throw std::invalid_argument("checkpoint.interval must be >= 1");
  if (o.keep_latest_k < 0 || o.keep_latest_k == 1)
    throw std::invalid_argument("checkpoint.keep_latest_k must be 0 (keep all) or >= 2");
  if (o.initial_load_in_hf && !o.initial_load_model_only)
    throw std::invalid_argument("checkpoint.initial_load_in_hf loads only the model: it needs checkpoint.initial_load_model_only");
  if (o.last_save_in_hf && !o.last_save_model_only)
    throw std::invalid_argument("checkpoint.last_save_in_hf saves only the model: it needs checkpoint.last_save_model_only");
}

Part& Parts::add(const std::string& name) {
  if (has(name)) throw std::logic_error("checkpoint: part '" + name + "' added twice");
  return parts_.emplace_back(name, Part{}).second;
}

const Part& Parts::at(const std::string& name) const {
  for (const auto& [n, part] : parts_)
    if (n == name) return part;
  throw std::logic_error("checkpoint: no part '" + name + "'");
}

bool Parts::has(const std::string& name) const {
  for (const auto& [n, part] : parts_)
    if (n == name) return true;
  return false;
}

CheckpointManager::CheckpointManager(Options options, Parts parts, nlohmann::json info)
    : options_(std::move(options)), parts_(std::move(parts)), info_(std::move(info)) {
  validate_options(options_);
  if (!parts_.has("model")) throw std::logic_error("checkpoint: no 'model' part registered");
  if (options_.enable && !options_.load_only && (!options_.comm || options_.comm->rank() == 0)) lock_folder();
}

CheckpointManager::~CheckpointManager() {
  try {
    wait();
  } catch (const std::exception& e) {
    log_warning(std::string("async checkpoint save failed: ") + e.what());
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void CheckpointManager::lock_folder() {
  const fs::path path = fs::path(options_.folder) / ".lock";
  std::error_code ec;
  fs::create_directories(options_.folder, ec);
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw std::runtime_error("cannot open " + path.string() + ": " + std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char holder[32] = {0};
    const ssize_t n = ::pread(lock_fd_, holder, sizeof(holder) - 1, 0);
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw std::runtime_error("checkpoint folder " + options_.folder + " is in use by another run (pid " +
                             (n > 0 ? std::string(holder, static_cast<size_t>(n)) : std::string("unknown")) +
                             "): its saves would interleave with this run's; give this run its own --job.dump_folder");
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    log_warning("could not write this run's pid into " + path.string());
}

std::string CheckpointManager::step_dir(int64_t step) const {
  return (fs::path(options_.folder) / ("step-" + std::to_string(step))).string();
}

std::vector<int64_t> CheckpointManager::complete_steps() const {
  std::vector<int64_t> steps;
  for (const auto& [step, path] : step_folders(options_.folder))
    if (is_complete(path.string()) || hf::is_hf_folder(path.string())) steps.push_back(step);
  return steps;
}

bool CheckpointManager::should_save(int64_t step, bool last_step) const {
  if (!options_.enable || options_.load_only) return false;
  return (step == 1 && options_.enable_first_step_checkpoint) || last_step || step % options_.interval == 0;
}

CheckpointManager::Snapshot CheckpointManager::snapshot(int64_t step, bool model_only, bool stage_copies) {
  Snapshot s;
  s.step = step;
  s.manifest.step = step;
  s.manifest.model_only = model_only;
  s.manifest.info = info_;
  for (const auto& [name, part] : parts_.all()) {
    if (model_only && name != "model") continue;
    PartState state = part.save();
    for (auto& t : state.tensors) {
      if (!t.save_here) continue;
      if (model_only && options_.export_dtype != t.local.scalar_type()) t.local = t.local.to(options_.export_dtype);
      if (stage_copies) {
        // Copies to host now: training may change the live tensors while the writer runs.
        if (options_.async_mode == "async_with_pinned_mem") {
          auto& buf = staging_[t.key];  // reused from save to save
          if (!buf.defined() || buf.sizes() != t.local.sizes() || buf.scalar_type() != t.local.scalar_type()) {
            buf = torch::empty(t.local.sizes(), torch::TensorOptions().dtype(t.local.scalar_type()));
            if (torch::cuda::is_available()) buf = buf.pin_memory();
          }
          buf.copy_(t.local);
          t.local = buf;
        } else {
          t.local = t.local.detach().to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true);
        }
      }
      s.tensors.push_back(std::move(t));
    }
    s.manifest.state[name] = std::move(state.state);
  }
  return s;
}

void CheckpointManager::write(const Snapshot& s, bool purge_after) {
  const std::string dir = step_dir(s.step);
  if (!options_.comm) {
    write_checkpoint(dir, s.tensors, s.manifest);
    if (purge_after) purge(s.step);
    return;
  }
  Collectives& comm = *options_.comm;
  auto entries = write_shard(dir, s.tensors, comm.rank());  // fsynced before rank 0 hears of it
  const std::string key = "checkpoint/step-" + std::to_string(s.step) + "/rank-";
  if (comm.rank() != 0) {
    comm.store_set(key + std::to_string(comm.rank()), entries_to_json(entries).dump());
    return;
  }
  Manifest manifest = s.manifest;
  merge_entries(manifest, entries);
  for (int64_t r = 1; r < comm.world_size(); ++r) {
    const std::string text = comm.store_get(key + std::to_string(r));
    comm.store_delete(key + std::to_string(r));
    merge_entries(manifest, entries_from_json(nlohmann::json::parse(text)));
  }
  write_manifest(dir, manifest);
  if (purge_after) purge(s.step);
}

void CheckpointManager::purge(int64_t just_written) {
  auto folders = step_folders(options_.folder);
  int64_t kept_complete = 1;  // the one just written
  for (auto it = folders.rbegin(); it != folders.rend(); ++it) {
    const auto& [step, path] = *it;
    // Newer folders may be saves other ranks have begun already; only their own save clears them.
    if (step >= just_written) continue;
    const bool complete = is_complete(path.string()) || hf::is_hf_folder(path.string());
    if (complete && (options_.keep_latest_k == 0 || kept_complete < options_.keep_latest_k)) {
      ++kept_complete;
      continue;
    }
    try {  // incomplete folders (interrupted saves) go too
      retire_folder(path.string(), hf::is_hf_folder(path.string()) ? hf::kIndexName : kManifestName);
    } catch (const std::exception& e) {
      log_warning(e.what());
    }
  }
}

void CheckpointManager::save(int64_t step, bool last_step) {
  if (!should_save(step, last_step)) return;
  wait();
  const auto start = std::chrono::steady_clock::now();
  if (last_step && options_.last_save_in_hf) {
    const auto tensors = options_.full_model ? options_.full_model() : parts_.at("model").save().tensors;
    if (!options_.comm || options_.comm->rank() == 0) {  // rank 0 holds every whole tensor
      hf::save_hf_model(step_dir(step), tensors, options_.model_args, options_.export_dtype, options_.hf_max_shard_bytes,
                        options_.hf_assets_path);
      purge(step);
    }
    wait_for_writers();
    log_info("Saved Hugging Face checkpoint " + step_dir(step));
    return;
  }
  if (last_step) {
    write(snapshot(step, options_.last_save_model_only, /*stage_copies=*/false), /*purge_after=*/true);
    wait_for_writers();
    log_info("Saved " + std::string(options_.last_save_model_only ? "model-only " : "") + "checkpoint " + step_dir(step) +
             " in " + seconds_since(start));
    return;
  }
  if (options_.async_mode == "disabled") {
    write(snapshot(step, false, false), /*purge_after=*/true);
    wait_for_writers();
    log_info("Saved checkpoint " + step_dir(step) + " in " + seconds_since(start));
    return;
  }
  auto snap = std::make_shared<Snapshot>(snapshot(step, false, /*stage_copies=*/true));
  log_info("Staged checkpoint step-" + std::to_string(step) + " in " + seconds_since(start) +
           "; writing it in the background (" + options_.async_mode + ")");
  in_flight_ = std::async(std::launch::async, [this, snap] { write(*snap, /*purge_after=*/true); });
}

void CheckpointManager::wait_for_writers() {
  // Ranks done early (replicas write nothing) would otherwise wait for rank 0's manifest inside the
  // next step's collective, under the shorter training timeout.
  if (options_.comm) options_.comm->world_cpu().barrier(options_.save_timeout);
}

void CheckpointManager::save_seed() {
  write(snapshot(0, options_.last_save_model_only, /*stage_copies=*/false), /*purge_after=*/false);
}

void CheckpointManager::wait() {
  if (in_flight_.valid()) in_flight_.get();
}

LoadResult CheckpointManager::load_from(const std::string& dir, bool model_only) {
  if (!is_complete(dir) && hf::is_hf_folder(dir))
    throw Err("checkpoint " + dir + " is a Hugging Face model export, so training cannot resume from it: start a new " +
              "run from it with --checkpoint.initial_load_path " + dir + " --checkpoint.initial_load_in_hf");
  const Manifest manifest = read_manifest(dir);
  if (!model_only && manifest.model_only)
    throw Err("checkpoint " + dir + " holds only the model (a last_save_model_only export), so training cannot resume " +
              "from it: keep full last saves with --checkpoint.no-last_save_model_only, or start a new run from its " +
              "weights with --checkpoint.initial_load_path " + dir + " in another dump folder");
  LoadResult r;
  r.loaded = true;
  r.from = dir;
  r.step = manifest.step;
  for (const auto& [name, part] : parts_.all()) {
    const bool excluded = std::find(options_.exclude_from_loading.begin(), options_.exclude_from_loading.end(), name) !=
                          options_.exclude_from_loading.end();
    if ((model_only && name != "model") || excluded) {
      r.skipped_parts.push_back(name);
      continue;
    }
    if (name == "model" && manifest.info.contains("hf_config"))  // same shapes may still be another model
      hf::check_config_matches(manifest.info["hf_config"], (fs::path(dir) / kManifestName).string(), options_.model_args,
                               "the checkpoint holds another model: set model.name and model.flavor as when it was saved");
    const bool dcp = manifest.container == "dcp";
    const std::string unmapped = " that maps to titan.cpp's (a PyTorch Distributed Checkpoint): add ";
    if (!manifest.state.contains(name))
      throw Err("checkpoint " + dir + " has no '" + name + "' state" +
                (dcp ? unmapped + "--checkpoint.exclude_from_loading " + name : std::string()));
    PartState state = part.save();
    if (dcp && name == "train_state")  // TorchTitan saves no RNG state: the run keeps its own
      state.tensors.erase(std::remove_if(state.tensors.begin(), state.tensors.end(),
                                         [&](const ShardedTensor& t) { return !manifest.tensors.count(t.key); }),
                          state.tensors.end());
    load_tensors(dir, manifest, state.tensors);
    state.state = manifest.state.at(name);
    part.load(state);
    r.loaded_parts.push_back(name);
  }
  log_info("Loaded checkpoint " + dir + " (step " + std::to_string(r.step) + "): " + join(r.loaded_parts) +
           (r.skipped_parts.empty() ? "" : "; skipped " + join(r.skipped_parts)));
  return r;
}

LoadResult CheckpointManager::load() {
  if (!options_.enable) return {};
  const auto steps = complete_steps();
  if (options_.load_step != -1) {
    const std::string dir = step_dir(options_.load_step);
    if (!fs::is_directory(dir)) {
      std::string have;
      for (auto s : steps) have += (have.empty() ? "" : ", ") + std::to_string(s);
      throw Err("--checkpoint.load_step=" + std::to_string(options_.load_step) + " but " + dir + " does not exist" +
                (have.empty() ? " (no complete checkpoint in " + options_.folder + ")" : " (complete steps: " + have + ")"));
    }
    return load_from(dir, options_.load_step == 0);
  }
  if (!steps.empty()) return load_from(step_dir(steps.back()), steps.back() == 0);
  if (options_.initial_load_in_hf) {
    const std::string path = options_.initial_load_path.value_or(options_.hf_assets_path);
    if (!fs::is_directory(path)) throw Err("checkpoint.initial_load_in_hf: '" + path + "' is not a folder");
    PartState model = parts_.at("model").save();
    hf::load_hf_model(path, model.tensors, options_.model_args);
    log_info("No checkpoint in " + options_.folder + ": loaded the model from Hugging Face folder " + path);
    LoadResult r;
    r.loaded = true;
    r.from = path;
    r.loaded_parts = {"model"};
    return r;
  }
  if (options_.initial_load_path) {
    const std::string& path = *options_.initial_load_path;
    if (!fs::is_directory(path))
      throw Err("checkpoint.initial_load_path '" + path + "' is not a checkpoint folder (a step-N directory)");
    log_info("No checkpoint in " + options_.folder + ": initial load from " + path);
    return load_from(path, options_.initial_load_model_only);
  }
  log_info("No checkpoint was provided, this is a fresh start.");
  return {};
}

}  // namespace titan::checkpoint
