#include "trainer/memory_snapshot.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>
#if TITAN_CUDA
#include <torch/csrc/cuda/memory_snapshot.h>
#endif

#include "parallel/logging.h"

namespace titan {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxEntries = 100000;  // TorchTitan's MEMORY_SNAPSHOT_MAX_ENTRIES

}  // namespace

MemorySnapshotter::MemorySnapshotter(std::string folder, int64_t rank, int64_t profile_freq, bool cuda)
    : folder_(std::move(folder)), rank_(rank), freq_(profile_freq) {
  if (!cuda)
    throw std::runtime_error("profiling.enable_memory_snapshot records the CUDA caching allocator; this run is on the CPU "
                             "(no GPU visible)");
#if TITAN_CUDA
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) throw std::runtime_error("cannot create the memory snapshot folder " + folder_ + ": " + ec.message());
  // torch.cuda.memory._record_memory_history(max_entries=...): every action, with C++ stacks.
  torch::cuda::_record_memory_history("all", "all", "all", kMaxEntries);
  log_info("Memory profiler active. Snapshot will be saved at " + folder_);
#else
  throw std::runtime_error("profiling.enable_memory_snapshot: this build has no CUDA (a CPU-only libtorch)");
#endif
}

MemorySnapshotter::~MemorySnapshotter() {
#if TITAN_CUDA
  try {
    torch::cuda::_record_memory_history(std::nullopt);
  } catch (const std::exception& e) {
    log_warning(std::string("memory snapshot: ") + e.what());
  }
#endif
}

void MemorySnapshotter::end_step(int64_t step) {
  if (step % freq_ == 0) dump("iteration_" + std::to_string(step), step);
}

void MemorySnapshotter::dump_on_out_of_memory(int64_t steps_done) {
  dump("iteration_" + std::to_string(steps_done) + "_exit", steps_done);
}

void MemorySnapshotter::dump(const std::string& iteration, int64_t step) {
#if TITAN_CUDA
  const fs::path dir = fs::path(folder_) / iteration;
  const fs::path file = dir / ("rank" + std::to_string(rank_) + "_memory_snapshot.pickle");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot write the memory snapshot " + file.string() + ": " + ec.message());
  log_info("Dumping memory snapshot at step " + std::to_string(step));
  const auto begin = std::chrono::steady_clock::now();
  const std::string pickled = torch::cuda::_memory_snapshot_pickled();
  std::ofstream out(file, std::ios::binary);
  out.write(pickled.data(), static_cast<std::streamsize>(pickled.size()));
  out.close();
  if (!out) throw std::runtime_error("cannot write the memory snapshot " + file.string());
  log_info("Finished dumping memory snapshot in " + seconds_since(begin) + " seconds");
#else
  (void)iteration, (void)step;
#endif
}

}  // namespace titan
