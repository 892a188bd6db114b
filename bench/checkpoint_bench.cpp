// Checkpoint throughput: save and load GB/s of a ~1 GB training state, and the training-loop stall
// of an async save as a fraction of a synchronous one. Run through bench/checkpoint_bench.sh,
// which also measures the disk with dd in the same run.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "checkpoint/checkpoint_manager.h"

namespace {

using namespace titan::checkpoint;
namespace fs = std::filesystem;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "bench_checkpoint";
  const double gb = argc > 2 ? std::stod(argv[2]) : 1.0;
  fs::remove_all(dir);
  // Model-like state: 64 fp32 tensors filling `gb` gigabytes.
  const int64_t n_tensors = 64, per = static_cast<int64_t>(gb * 1e9 / 4 / n_tensors);
  std::vector<torch::Tensor> state;
  for (int64_t i = 0; i < n_tensors; ++i) state.push_back(torch::randn({per}));
  const double bytes = static_cast<double>(n_tensors * per * 4);
  Parts parts;
  Part& model_part = parts.add("model");
  model_part.save = [&] {
    PartState s;
    for (size_t i = 0; i < state.size(); ++i) s.tensors.push_back(ShardedTensor::whole("t" + std::to_string(i), state[i]));
    return s;
  };

  auto manager_for = [&](const std::string& mode) {
    Options o;
    o.enable = true;
    o.folder = dir + "/" + mode;
    o.interval = 1;
    o.keep_latest_k = 0;
    o.last_save_model_only = false;
    o.async_mode = mode;
    return std::make_unique<CheckpointManager>(o, parts, nlohmann::json::object());
  };

  // Synchronous save: the whole write (with fsyncs) stalls training.
  auto sync = manager_for("disabled");
  auto t0 = std::chrono::steady_clock::now();
  sync->save(1, false);
  const double sync_s = seconds_since(t0);

  // Load back (warm page cache, CRC-32 checked).
  auto targets = parts.at("model").save().tensors;
  for (auto& t : targets) t.local = torch::empty_like(t.local);
  t0 = std::chrono::steady_clock::now();
  load_tensors(sync->step_dir(1), read_manifest(sync->step_dir(1)), targets);
  const double load_s = seconds_since(t0);

  // Async saves: training stalls only for staging; the write finishes in the background.
  double stall[2], total[2];
  const char* modes[2] = {"async", "async_with_pinned_mem"};
  for (int m = 0; m < 2; ++m) {
    auto manager = manager_for(modes[m]);
    manager->save(1, false);  // first save allocates staging buffers
    manager->wait();
    t0 = std::chrono::steady_clock::now();
    manager->save(2, false);
    stall[m] = seconds_since(t0);
    manager->wait();
    total[m] = seconds_since(t0);
  }
  std::printf("state: %.2f GB in %lld tensors\n", bytes / 1e9, static_cast<long long>(n_tensors));
  std::printf("sync save: %.2f s = %.2f GB/s (fsynced)\n", sync_s, bytes / 1e9 / sync_s);
  std::printf("load:      %.2f s = %.2f GB/s (warm cache, CRC-32 checked)\n", load_s, bytes / 1e9 / load_s);
  for (int m = 0; m < 2; ++m)
    std::printf("%-22s stall %.3f s = %.1f%% of a sync save (write done after %.2f s)\n", modes[m], stall[m],
                100 * stall[m] / sync_s, total[m]);
  std::printf("SAVE_GBPS %.3f\nLOAD_GBPS %.3f\n", bytes / 1e9 / sync_s, bytes / 1e9 / load_s);
  fs::remove_all(dir);
  return 0;
}
