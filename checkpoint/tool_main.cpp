// titan_checkpoint: offline tools for native checkpoints.
//   titan_checkpoint inspect STEP_DIR            keys, shapes, dtypes, chunks, step and state
//   titan_checkpoint to-torch STEP_DIR OUT.pt    one file Python's torch.load opens as {key: tensor}
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "checkpoint/checkpoint_format.h"
#include "checkpoint/safetensors.h"

namespace {

using titan::checkpoint::Manifest;

int usage() {
  std::fprintf(stderr,
               "usage: titan_checkpoint inspect STEP_DIR\n"
               "       titan_checkpoint to-torch STEP_DIR OUT.pt\n");
  return 2;
}

void inspect(const std::string& dir) {
  const Manifest m = titan::checkpoint::read_manifest(dir);
  int64_t bytes = 0;
  for (const auto& [key, e] : m.tensors)
    for (const auto& c : e.chunks) bytes += c.end - c.begin;
  std::printf("checkpoint %s\nstep: %lld\nmodel_only: %s\ntensors: %zu (%.3f GB)\n", dir.c_str(),
              static_cast<long long>(m.step), m.model_only ? "true" : "false", m.tensors.size(), bytes / 1e9);
  for (const auto& [key, e] : m.tensors)
    std::printf("  %-60s %-5s %-20s %zu chunk(s)\n", key.c_str(), e.dtype.c_str(), c10::str(c10::IntArrayRef(e.shape)).c_str(),
                e.chunks.size());
  std::printf("state: %s\n", m.state.dump().c_str());
}

void to_torch(const std::string& dir, const std::string& out) {
  const Manifest m = titan::checkpoint::read_manifest(dir);
  std::vector<titan::checkpoint::ShardedTensor> targets;
  for (const auto& [key, e] : m.tensors) {
    const auto dtype = titan::safetensors::dtype_from_name(e.dtype, dir);
    targets.push_back(titan::checkpoint::ShardedTensor::whole(key, torch::empty(e.shape, torch::TensorOptions().dtype(dtype))));
  }
  titan::checkpoint::load_tensors(dir, m, targets);
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& t : targets) dict.insert(t.key, t.local);
  const std::vector<char> bytes = torch::pickle_save(dict);
  std::ofstream f(out, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f.flush()) throw std::runtime_error("cannot write " + out);
  std::printf("wrote %zu tensors to %s\n", targets.size(), out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "inspect" && argc == 3) {
      inspect(argv[2]);
      return 0;
    }
    if (cmd == "to-torch" && argc == 4) {
      to_torch(argv[2], argv[3]);
      return 0;
    }
    return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", std::string(e.what()).substr(0, std::string(e.what()).find('\n')).c_str());
    return 1;
  }
}
