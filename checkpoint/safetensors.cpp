#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace titan::safetensors {
namespace {

using Err = std::runtime_error;

const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_table() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> table = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
      {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  return table;
}

void read_all(int fd, char* data, size_t n, int64_t offset, const std::string& path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, data, n, offset);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw Err(path + ": file is truncated or unreadable" + (r < 0 ? std::string(": ") + std::strerror(errno) : ""));
    data += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
}

}  // namespace

void write_all(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Err("cannot write " + path + ": " + std::strerror(errno));
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
}

Fd::~Fd() {
  if (fd >= 0) ::close(fd);
}

const TensorInfo* Header::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string dtype_name(torch::ScalarType dtype) {
  for (const auto& [name, t] : dtype_table())
    if (t == dtype) return name;
  throw Err(std::string("dtype ") + c10::toString(dtype) + " cannot be stored in safetensors");
}

torch::ScalarType dtype_from_name(const std::string& name, const std::string& where) {
  for (const auto& [n, t] : dtype_table())
    if (n == name) return t;
  throw Err(where + ": unknown safetensors dtype '" + name + "'");
}

uint32_t crc32_of(const torch::Tensor& t) {
  return static_cast<uint32_t>(crc32_z(0, static_cast<const Bytef*>(t.data_ptr()), static_cast<z_size_t>(t.nbytes())));
}

Header write_file(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  Header written;
  written.metadata = metadata;
  std::vector<torch::Tensor> data;
  data.reserve(tensors.size());
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const int64_t n = static_cast<int64_t>(t.nbytes());
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    written.tensors.push_back({name, t.scalar_type(), t.sizes().vec(), offset, offset + n, crc32_of(t)});
    offset += n;
    data.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (f.fd < 0) throw Err("cannot create " + path + ": " + std::strerror(errno));
  uint64_t len = text.size();
  char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  write_all(f.fd, len_le, 8, path);
  write_all(f.fd, text.data(), text.size(), path);
  for (const auto& t : data) write_all(f.fd, static_cast<const char*>(t.data_ptr()), t.nbytes(), path);
  if (::fsync(f.fd) != 0) throw Err("cannot fsync " + path + ": " + std::strerror(errno));
  written.data_start = 8 + static_cast<int64_t>(text.size());
  return written;
}

Header read_header(const std::string& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw Err("cannot open " + path + ": " + std::strerror(errno));
  const int64_t file_size = ::lseek(f.fd, 0, SEEK_END);
  unsigned char len_le[8];
  if (file_size < 8) throw Err(path + ": not a safetensors file (shorter than 8 bytes)");
  read_all(f.fd, reinterpret_cast<char*>(len_le), 8, 0, path);
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= static_cast<uint64_t>(len_le[i]) << (8 * i);
  if (len > static_cast<uint64_t>(file_size - 8) || len > (100u << 20))
    throw Err(path + ": bad safetensors header length " + std::to_string(len));
  std::string text(len, '\0');
  read_all(f.fd, text.data(), len, 8, path);
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Err(path + ": safetensors header is not valid JSON (" + e.what() + ")");
  }
  if (!json.is_object()) throw Err(path + ": safetensors header is not a JSON object");
  Header h;
  h.data_start = 8 + static_cast<int64_t>(len);
  const int64_t data_size = file_size - h.data_start;
  for (const auto& [name, v] : json.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) throw Err(path + ": __metadata__ must be a map of strings");
      for (const auto& [k, s] : v.items()) {
        if (!s.is_string()) throw Err(path + ": __metadata__." + k + " is not a string");
        h.metadata[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      throw Err(where + ": needs dtype, shape and data_offsets [begin, end]");
    TensorInfo t;
    t.name = name;
    t.dtype = dtype_from_name(v["dtype"].get<std::string>(), where);
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) throw Err(where + ": bad shape");
      t.shape.push_back(d.get<int64_t>());
      numel *= t.shape.back();
    }
    if (!v["data_offsets"][0].is_number_integer() || !v["data_offsets"][1].is_number_integer())
      throw Err(where + ": data_offsets must be integers");
    t.begin = v["data_offsets"][0].get<int64_t>();
    t.end = v["data_offsets"][1].get<int64_t>();
    if (t.begin < 0 || t.end < t.begin || t.end > data_size)
      throw Err(where + ": data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                "] fall outside the " + std::to_string(data_size) + "-byte data section (truncated file?)");
    if (t.end - t.begin != numel * static_cast<int64_t>(c10::elementSize(t.dtype)))
      throw Err(where + ": " + std::to_string(t.end - t.begin) + " bytes do not match its shape and dtype");
    h.tensors.push_back(std::move(t));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : h.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      throw Err(path + ": tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return h;
}

torch::Tensor read_range(const std::string& path, int64_t begin, torch::ScalarType dtype, const std::vector<int64_t>& shape) {
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (f.fd < 0) throw Err("cannot open " + path + ": " + std::strerror(errno));
  read_all(f.fd, static_cast<char*>(t.data_ptr()), t.nbytes(), begin, path);
  return t;
}

torch::Tensor read_tensor(const std::string& path, const Header& header, const TensorInfo& info) {
  return read_range(path, header.data_start + info.begin, info.dtype, info.shape);
}

}  // namespace titan::safetensors
