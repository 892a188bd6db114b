#include "checkpoint/checkpoint_format.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <stdexcept>
#include <thread>

#include <zlib.h>

#include "checkpoint/dcp_reader.h"
#include "checkpoint/safetensors.h"

namespace titan::checkpoint {
namespace {

namespace fs = std::filesystem;
using Err = std::runtime_error;

void fsync_path(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw Err("cannot open " + path + " to fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw Err("cannot fsync " + path + ": " + std::strerror(errno));
}

std::vector<int64_t> or_default(const std::vector<int64_t>& v, const std::vector<int64_t>& fallback) {
  return v.empty() ? fallback : v;
}

// Fault injection for the crash tests: sleep between the data files and the manifest (of a save,
// or of a retirement with TITAN_TEST_RETIRE_DELAY_MS).
void maybe_delay(const char* variable) {
  if (const char* ms = std::getenv(variable)) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(ms)));
}

nlohmann::json to_json(const Manifest& m) {
  return {{"format", "titan.cpp checkpoint"}, {"version", 1},  {"step", m.step},
          {"model_only", m.model_only},       {"state", m.state}, {"info", m.info},
          {"tensors", entries_to_json(m.tensors)}};
}

// CRC-32 of the manifest's compact text without its own "manifest_crc32": a changed digit anywhere
// (a step, an offset, a tensor's CRC) is caught when the manifest is read.
uint32_t manifest_crc(nlohmann::json j) {
  j.erase("manifest_crc32");
  const std::string text = j.dump();
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size())));
}

// One chunk of our safetensors files, its size and CRC-32 checked.
torch::Tensor read_checked(const std::string& dir, const Chunk& c, torch::ScalarType dtype, const std::string& key) {
  const std::string path = (fs::path(dir) / c.file).string();
  int64_t numel = 1;
  for (auto n : c.sizes) numel *= n;
  if (c.end - c.begin != numel * static_cast<int64_t>(c10::elementSize(dtype)))
    throw Err("checkpoint " + dir + ": the byte range of '" + key + "' in " + c.file + " does not match its sizes");
  torch::Tensor data;
  try {
    data = safetensors::read_range(path, c.begin, dtype, c.sizes);
  } catch (const std::exception& e) {
    throw Err("checkpoint tensor '" + key + "': " + e.what());
  }
  if (safetensors::crc32_of(data) != c.crc32)
    throw Err("checkpoint file " + path + " is corrupt: tensor '" + key + "' fails its CRC-32 check");
  return data;
}

}  // namespace

nlohmann::json entries_to_json(const std::map<std::string, TensorEntry>& entries) {
  nlohmann::json tensors = nlohmann::json::object();
  for (const auto& [key, e] : entries) {
    nlohmann::json chunks = nlohmann::json::array();
    for (const auto& c : e.chunks)
      chunks.push_back({{"file", c.file}, {"offsets", c.offsets}, {"sizes", c.sizes}, {"byte_range", {c.begin, c.end}},
                        {"crc32", c.crc32}});
    tensors[key] = {{"dtype", e.dtype}, {"shape", e.shape}, {"chunks", chunks}};
  }
  return tensors;
}

std::map<std::string, TensorEntry> entries_from_json(const nlohmann::json& tensors) {
  std::map<std::string, TensorEntry> out;
  for (const auto& [key, e] : tensors.items()) {
    TensorEntry entry;
    entry.dtype = e.at("dtype").get<std::string>();
    entry.shape = e.at("shape").get<std::vector<int64_t>>();
    for (const auto& c : e.at("chunks")) {
      Chunk chunk;
      chunk.file = c.at("file").get<std::string>();
      chunk.offsets = c.at("offsets").get<std::vector<int64_t>>();
      chunk.sizes = c.at("sizes").get<std::vector<int64_t>>();
      chunk.begin = c.at("byte_range").at(0).get<int64_t>();
      chunk.end = c.at("byte_range").at(1).get<int64_t>();
      chunk.crc32 = c.at("crc32").get<uint32_t>();
      if (chunk.file.find('/') != std::string::npos) throw Err("chunk file '" + chunk.file + "' is not in the folder");
      entry.chunks.push_back(std::move(chunk));
    }
    out[key] = std::move(entry);
  }
  return out;
}

bool is_complete(const std::string& dir) { return fs::exists(fs::path(dir) / kManifestName); }

std::vector<std::pair<int64_t, fs::path>> step_folders(const std::string& folder) {
  std::vector<std::pair<int64_t, fs::path>> out;
  if (!fs::is_directory(folder)) return out;
  static const std::regex pattern("step-(\\d+)");
  for (const auto& entry : fs::directory_iterator(folder)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(name, m, pattern)) out.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::map<std::string, TensorEntry> write_shard(const std::string& dir, const std::vector<ShardedTensor>& tensors,
                                               int64_t rank) {
  const fs::path folder(dir);
  fs::create_directories(folder);
  const fs::path manifest_path = folder / kManifestName;
  // Rewriting a step: it stops looking complete, durably, before any data changes. Every rank
  // syncs the folder, also one whose peer removed the manifest first.
  std::error_code ignored;
  fs::remove(manifest_path, ignored);
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
  if (tensors.empty()) return {};  // a replica whose pieces another rank saves writes no file
  const std::string file = "__" + std::to_string(rank) + "_0.safetensors";
  std::vector<std::pair<std::string, torch::Tensor>> named;
  named.reserve(tensors.size());
  for (const auto& t : tensors) named.emplace_back(t.key, t.local);
  const auto header = safetensors::write_file((folder / file).string(), named, {{"format", "pt"}});

  std::map<std::string, TensorEntry> entries;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const auto& info = header.tensors[i];
    auto& entry = entries[t.key];
    entry.dtype = safetensors::dtype_name(t.local.scalar_type());
    entry.shape = or_default(t.global_shape, t.local.sizes().vec());
    Chunk c;
    c.file = file;
    c.sizes = t.local.sizes().vec();
    c.offsets = or_default(t.offsets, std::vector<int64_t>(c.sizes.size(), 0));
    c.begin = header.data_start + info.begin;
    c.end = header.data_start + info.end;
    c.crc32 = info.crc32;
    entry.chunks.push_back(c);
  }
  return entries;
}

void retire_folder(const std::string& dir, const std::string& marker) {
  std::error_code ec;
  if (fs::remove(fs::path(dir) / marker, ec)) fsync_path(dir, O_RDONLY | O_DIRECTORY);
  maybe_delay("TITAN_TEST_RETIRE_DELAY_MS");
  fs::remove_all(dir, ec);
  if (ec) throw Err("cannot remove " + dir + ": " + ec.message());
}

void merge_entries(Manifest& manifest, const std::map<std::string, TensorEntry>& entries) {
  for (const auto& [key, e] : entries) {
    auto [it, inserted] = manifest.tensors.emplace(key, e);
    if (!inserted) it->second.chunks.insert(it->second.chunks.end(), e.chunks.begin(), e.chunks.end());
  }
}

void write_manifest(const std::string& dir, const Manifest& manifest) {
  maybe_delay("TITAN_TEST_CHECKPOINT_DELAY_MS");
  auto j = to_json(manifest);
  j["manifest_crc32"] = manifest_crc(j);
  write_last(dir, kManifestName, j.dump(1) + "\n");
}

void write_last(const std::string& dir, const std::string& name, const std::string& bytes) {
  const fs::path folder(dir);
  fsync_path(dir, O_RDONLY | O_DIRECTORY);  // the data files' directory entries
  const fs::path tmp = folder / (name + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary);
    out << bytes;
    if (!out.flush()) throw Err("cannot write " + tmp.string());
  }
  fsync_path(tmp.string(), O_RDONLY);
  fs::rename(tmp, folder / name);
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

void write_checkpoint(const std::string& dir, const std::vector<ShardedTensor>& tensors, Manifest manifest) {
  merge_entries(manifest, write_shard(dir, tensors, /*rank=*/0));
  write_manifest(dir, manifest);
}

Manifest read_manifest(const std::string& dir) {
  const fs::path path = fs::path(dir) / kManifestName;
  if (dcp::is_dcp_folder(dir)) return dcp::read_manifest(dir);
  std::ifstream in(path);
  if (!in) throw Err("checkpoint " + dir + " is incomplete: it has no " + kManifestName + " (a save was interrupted)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Err(path.string() + ": not valid JSON (" + e.what() + ")");
  }
  try {
    if (j.value("format", "") != "titan.cpp checkpoint") throw Err("not a titan.cpp checkpoint manifest");
    if (j.contains("manifest_crc32") && j["manifest_crc32"].get<uint32_t>() != manifest_crc(j))
      throw Err("the manifest was changed after it was written (its manifest_crc32 does not match its text)");
    Manifest m;
    m.step = j.at("step").get<int64_t>();
    m.model_only = j.at("model_only").get<bool>();
    m.state = j.at("state");
    m.info = j.value("info", nlohmann::json::object());
    m.tensors = entries_from_json(j.at("tensors"));
    return m;
  } catch (const nlohmann::json::exception& e) {
    throw Err(path.string() + ": malformed manifest (" + e.what() + ")");
  } catch (const Err& e) {
    throw Err(path.string() + ": " + e.what());
  }
}

void load_tensors(const std::string& dir, const Manifest& manifest, std::vector<ShardedTensor>& targets) {
  for (auto& target : targets) {
    auto it = manifest.tensors.find(target.key);
    if (it == manifest.tensors.end()) throw Err("checkpoint " + dir + " has no tensor '" + target.key + "'");
    const TensorEntry& entry = it->second;
    const auto global = or_default(target.global_shape, target.local.sizes().vec());
    if (entry.shape != global)
      throw Err("checkpoint " + dir + ": '" + target.key + "' has shape " + c10::str(c10::IntArrayRef(entry.shape)) +
                ", the model expects " + c10::str(c10::IntArrayRef(global)));
    const auto dtype = safetensors::dtype_from_name(entry.dtype, dir + "/" + kManifestName);
    const auto t_offsets = or_default(target.offsets, std::vector<int64_t>(global.size(), 0));
    const auto t_sizes = target.local.sizes().vec();
    torch::NoGradGuard no_grad;
    int64_t covered = 0;
    for (const auto& c : entry.chunks) {
      // Overlap of the chunk and the target piece, in global coordinates, per dimension.
      std::vector<int64_t> lo(global.size()), hi(global.size());
      bool empty = false;
      for (size_t d = 0; d < global.size(); ++d) {
        lo[d] = std::max(c.offsets[d], t_offsets[d]);
        hi[d] = std::min(c.offsets[d] + c.sizes[d], t_offsets[d] + t_sizes[d]);
        empty = empty || hi[d] <= lo[d];
      }
      if (empty && !global.empty()) continue;
      // A DCP item is a torch.save archive, checked by its own sizes; ours carry CRC-32s.
      const torch::Tensor data = manifest.container == "dcp" ? dcp::read_chunk(dir, c, dtype, target.key)
                                                             : read_checked(dir, c, dtype, target.key);
      auto src = data, dst = target.local;
      for (size_t d = 0; d < global.size(); ++d) {
        src = src.narrow(static_cast<int64_t>(d), lo[d] - c.offsets[d], hi[d] - lo[d]);
        dst = dst.narrow(static_cast<int64_t>(d), lo[d] - t_offsets[d], hi[d] - lo[d]);
      }
      dst.copy_(src);
      covered += src.numel();
    }
    if (covered != target.local.numel())
      throw Err("checkpoint " + dir + ": the saved chunks of '" + target.key + "' cover " + std::to_string(covered) + " of " +
                std::to_string(target.local.numel()) + " elements this rank needs");
  }
}

}  // namespace titan::checkpoint
