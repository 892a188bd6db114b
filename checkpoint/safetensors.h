// The safetensors container (the only tensor format we write, native and Hugging Face alike):
// 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} with an
// optional "__metadata__" map of strings, then the raw little-endian tensor bytes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/common/torch_api.h"

namespace titan::safetensors {

struct TensorInfo {
  std::string name;
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // byte range, relative to the start of the data section
  uint32_t crc32 = 0;          // of the bytes; filled by write_file only
};

struct Header {
  std::vector<TensorInfo> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  int64_t data_start = 0;  // file offset of the data section
  const TensorInfo* find(const std::string& name) const;
};

// "F32", "BF16", "F16", "I64", "I32", "U8", "BOOL", ... <-> torch dtypes; throws on unknown names.
std::string dtype_name(torch::ScalarType dtype);
torch::ScalarType dtype_from_name(const std::string& name, const std::string& where);

// Writes tensors (moved to CPU and made contiguous as needed) in the given order, fsyncs the
// file, and returns the header it wrote, with each tensor's CRC-32.
Header write_file(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata);

// Parses and checks the header: JSON shape, dtypes, sizes matching shapes, offsets in range and
// not overlapping. Throws std::runtime_error naming the file.
Header read_header(const std::string& path);

// Reads one tensor's bytes straight into a new CPU tensor (one read, no intermediate buffer).
torch::Tensor read_tensor(const std::string& path, const Header& header, const TensorInfo& info);
// The same for bytes [begin, begin + numel * element size) of any file.
torch::Tensor read_range(const std::string& path, int64_t begin, torch::ScalarType dtype, const std::vector<int64_t>& shape);

uint32_t crc32_of(const torch::Tensor& contiguous_cpu);

// write(2) of all n bytes (through EINTR and short writes); an error names `path`.
void write_all(int fd, const char* data, size_t n, const std::string& path);
// A file descriptor closed when it goes out of scope.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  ~Fd();
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

}  // namespace titan::safetensors
