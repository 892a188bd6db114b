// profiling.enable_memory_snapshot: TorchTitan's MemoryProfiler (tools/profiling.py) on libtorch's
// CUDA caching allocator: its history is recorded from the start (100,000 entries), and a pickled
// snapshot, the file torch.cuda.memory._dump_snapshot writes and pytorch.org/memory_viz reads, is
// saved every profile_freq steps at
// {dump_folder}/{save_memory_snapshot_folder}/iteration_{N}/rank{R}_memory_snapshot.pickle and
// at iteration_{N}_exit (N: the steps done) when a step runs out of memory.
#pragma once

#include <cstdint>
#include <string>

namespace titan {

class MemorySnapshotter {
 public:
  // `folder`: the snapshots folder, created here. Throws unless training runs on a GPU (`cuda`).
  MemorySnapshotter(std::string folder, int64_t rank, int64_t profile_freq, bool cuda);
  ~MemorySnapshotter();
  MemorySnapshotter(const MemorySnapshotter&) = delete;
  MemorySnapshotter& operator=(const MemorySnapshotter&) = delete;

  // After training step `step` (1-based): a snapshot when `step` is a multiple of profile_freq.
  void end_step(int64_t step);
  // A step after `steps_done` ran out of GPU memory: the allocator's state then, for memory_viz.
  void dump_on_out_of_memory(int64_t steps_done);

 private:
  void dump(const std::string& iteration, int64_t step);

  std::string folder_;
  int64_t rank_;
  int64_t freq_;
};

}  // namespace titan
