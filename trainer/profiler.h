// profiling.enable_profiling: TorchTitan's profiler (tools/profiling.py) on libtorch's own Kineto
// profiler: torch.profiler.schedule(wait = profile_freq - warmup - active, warmup, active) over the
// training steps, one Chrome trace per cycle in
// {dump_folder}/{save_traces_folder}/iteration_{N}/rank{R}_trace.json (N: the cycle's last step).
#pragma once

#include <ATen/record_function.h>

#include <cstdint>
#include <optional>
#include <string>

namespace titan {

class StepProfiler {
 public:
  // `folder`: the traces folder, created here; `cuda`: also record the GPU's kernels.
  StepProfiler(std::string folder, int64_t rank, bool cuda, int64_t profile_freq, int64_t warmup, int64_t active);
  // A trace still recording when training ends is saved, as torch.profiler's exit does.
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // Around training step `step` (1-based, the log's numbering): the schedule's phase for it starts
  // before, and a "ProfilerStep#{step}" range spans it; after the cycle's last active step, its
  // trace is saved.
  void begin_step(int64_t step);
  void end_step();

 private:
  enum class Phase { kIdle, kWarmup, kRecording };
  void save(int64_t step);

  std::string folder_;
  int64_t rank_;
  bool cuda_;
  int64_t freq_, warmup_, active_;
  Phase phase_ = Phase::kIdle;
  int64_t step_ = 0;
  std::optional<at::RecordFunction> step_range_;
};

}  // namespace titan
