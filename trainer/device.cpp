#include "trainer/device.h"

#include <ATen/DeviceAccelerator.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>
#include <utility>
#include <vector>
#if TITAN_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace titan {

torch::Device select_device(int64_t local_rank) {
  if (!torch::cuda::is_available()) return torch::kCPU;
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  if (local_rank >= count)
    throw std::invalid_argument("LOCAL_RANK " + std::to_string(local_rank) + " has no GPU: " + std::to_string(count) +
                                " visible (start at most that many ranks per node, or CUDA_VISIBLE_DEVICES= for CPU)");
  at::accelerator::setDeviceIndex(static_cast<c10::DeviceIndex>(local_rank));
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

std::string device_name(const torch::Device& device) {
#if TITAN_CUDA
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
#endif
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  return "CPU";
}

DeviceMemory device_memory(const torch::Device& device) {
  DeviceMemory m;
  if (device.is_cuda()) {
    const auto stats = at::accelerator::getDeviceStats(device.index());
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    m.peak_bytes = stats.reserved_bytes[all].peak;
    m.active_peak_bytes = stats.active_bytes[all].peak;
    m.num_alloc_retries = stats.num_alloc_retries;
    m.num_ooms = stats.num_ooms;
    m.capacity_bytes = static_cast<int64_t>(at::accelerator::getMemoryInfo(device.index()).second);
    return m;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  m.peak_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // ru_maxrss is KiB on Linux
  m.capacity_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  return m;
}

std::optional<double> known_peak_flops(const std::string& name) {
  auto has = [&name](const char* part) { return name.find(part) != std::string::npos; };
  if (has("H100")) return has("NVL") ? 835e12 : has("PCIe") ? 756e12 : 989e12;
  const std::vector<std::pair<const char*, double>> table = {
      {"H200", 989e12}, {"H20", 148e12},     {"B200", 2.25e15},   {"A100", 312e12},  {"L40S", 362e12},
      {"MI300X", 1300e12}, {"MI325X", 1300e12}, {"MI355X", 2500e12},
  };
  for (const auto& [part, flops] : table)
    if (has(part)) return flops;
  return std::nullopt;
}

}  // namespace titan
