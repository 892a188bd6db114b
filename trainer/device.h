// The rank's device and what the log line reports about it: as TorchTitan, GPU LOCAL_RANK when
// CUDA has a device (CUDA_VISIBLE_DEVICES= hides them all), else the CPU; the peak memory (the
// CUDA caching allocator's peak reserved, or the process's peak resident size) against the
// device's capacity; and the GPU's peak bf16 FLOP/s from a table of known parts.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "models/common/torch_api.h"

namespace titan {

// Makes the chosen GPU the current one, so libraries that allocate on "the" device use it.
torch::Device select_device(int64_t local_rank);

std::string device_name(const torch::Device& device);  // "NVIDIA H200", or the CPU's model name

struct DeviceMemory {
  int64_t peak_bytes = 0;      // CUDA: peak reserved by the caching allocator; CPU: peak RSS
  int64_t capacity_bytes = 0;  // the GPU's memory, or the machine's
  // The caching allocator's own figures, on CUDA only (TorchTitan logs them to TensorBoard).
  std::optional<int64_t> active_peak_bytes;
  int64_t num_alloc_retries = 0, num_ooms = 0;

  // `bytes` as the log line and TensorBoard show it: GiB, and percent of the capacity.
  double gib(int64_t bytes) const { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }
  double percent(int64_t bytes) const { return 100.0 * static_cast<double>(bytes) / static_cast<double>(capacity_bytes); }
};
DeviceMemory device_memory(const torch::Device& device);

// Dense bf16 FLOP/s of a known GPU by name (TorchTitan's table), none for other devices.
std::optional<double> known_peak_flops(const std::string& device_name);

}  // namespace titan
