#include "trainer/profiler.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <system_error>

#include "parallel/logging.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// TorchTitan's record_shapes=True; no memory, stacks, FLOPs or modules.
ProfilerConfig config() {
  return ProfilerConfig(ProfilerState::KINETO, /*report_input_shapes=*/true);
}

std::set<ActivityType> activities(bool cuda) {
  if (cuda) return {ActivityType::CPU, ActivityType::CUDA};
  return {ActivityType::CPU};
}

}  // namespace

StepProfiler::StepProfiler(std::string folder, int64_t rank, bool cuda, int64_t profile_freq, int64_t warmup,
                           int64_t active)
    : folder_(std::move(folder)), rank_(rank), cuda_(cuda), freq_(profile_freq), warmup_(warmup), active_(active) {
  std::error_code ec;
  fs::create_directories(folder_, ec);
  if (ec) throw std::runtime_error("cannot create the profiler traces folder " + folder_ + ": " + ec.message());
  log_info("Profiling active. Traces will be saved at " + folder_);
}

StepProfiler::~StepProfiler() {
  step_range_.reset();
  try {
    if (phase_ == Phase::kRecording) save(step_);
    if (phase_ == Phase::kWarmup) {  // prepared, never started: start and drop, as torch.profiler's exit
      kineto::enableProfiler(config(), activities(cuda_));
      kineto::disableProfiler();
    }
  } catch (const std::exception& e) {
    log_warning(std::string("profiler: ") + e.what());
  }
}

void StepProfiler::begin_step(int64_t step) {
  // torch.profiler.schedule at step_num = step - 1: wait, warmup, then active steps, the last of which saves.
  step_ = step;
  const int64_t position = (step - 1) % freq_, wait = freq_ - warmup_ - active_;
  if (position >= wait && phase_ == Phase::kIdle) {
    kineto::prepareProfiler(config(), activities(cuda_));
    phase_ = Phase::kWarmup;
  }
  if (position >= wait + warmup_ && phase_ == Phase::kWarmup) {
    kineto::enableProfiler(config(), activities(cuda_));
    phase_ = Phase::kRecording;
  }
  step_range_.emplace(at::RecordScope::USER_SCOPE);
  if (step_range_->isActive()) step_range_->before("ProfilerStep#" + std::to_string(step));
}

void StepProfiler::end_step() {
  step_range_.reset();  // ends the step's range
  if (phase_ == Phase::kRecording && step_ % freq_ == 0) save(step_);
}

void StepProfiler::save(int64_t step) {
  auto result = kineto::disableProfiler();
  phase_ = Phase::kIdle;
  const fs::path dir = fs::path(folder_) / ("iteration_" + std::to_string(step));
  const fs::path file = dir / ("rank" + std::to_string(rank_) + "_trace.json");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot write the profiler trace " + file.string() + ": " + ec.message());
  log_info("Dumping profiler traces at step " + std::to_string(step));
  const auto begin = std::chrono::steady_clock::now();
  fs::remove(file, ec);
  result->save(file.string());
  // Kineto only logs a trace it could not write.
  if (!fs::is_regular_file(file)) throw std::runtime_error("cannot write the profiler trace " + file.string());
  log_info("Finished dumping profiler traces in " + seconds_since(begin) + " seconds");
}

}  // namespace titan
