// titan_checkpoint: offline tools for native checkpoints.
//   titan_checkpoint inspect STEP_DIR            keys, shapes, dtypes, chunks, step and state
//   titan_checkpoint to-torch STEP_DIR OUT.pt    one file Python's torch.load opens as {key: tensor}
//   titan_checkpoint from-hf HF_DIR STEP_DIR     an HF Llama folder -> a native step-0 (model only)
//   titan_checkpoint to-hf STEP_DIR OUT_DIR [--dtype float32|bfloat16|float16] [--hf-assets DIR]
//                                                [--max-shard-mb N]   a native checkpoint -> an HF folder
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include <filesystem>

#include "checkpoint/checkpoint_format.h"
#include "checkpoint/hf_adapter.h"
#include "checkpoint/hf_checkpoint.h"
#include "models/llama3/model.h"
#include "parallel/logging.h"
#include "checkpoint/safetensors.h"

namespace {

using titan::checkpoint::Manifest;

int usage() {
  std::fprintf(stderr,
               "usage: titan_checkpoint inspect STEP_DIR\n"
               "       titan_checkpoint to-torch STEP_DIR OUT.pt\n"
               "       titan_checkpoint from-hf HF_DIR STEP_DIR\n"
               "       titan_checkpoint to-hf STEP_DIR OUT_DIR [--dtype float32|bfloat16|float16] [--hf-assets DIR] "
               "[--max-shard-mb N]\n");
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
  // torch.save's zip layout with an untagged dict: torch::pickle_save tags the dict's type for
  // TorchScript, a global that torch.load's default (weights_only=True, since 2.6) refuses.
  std::vector<char> pickled;
  torch::jit::Pickler pickler([&](const char* p, size_t n) { pickled.insert(pickled.end(), p, p + n); }, nullptr,
                              nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(dict);
  pickler.stop();
  try {
    caffe2::serialize::PyTorchStreamWriter writer(out);
    torch::jit::writeArchiveAndTensors("data", pickled.data(), pickled.size(), pickler.tensorData(), writer);
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot write " + out + ": " + titan::first_line(e.what_without_backtrace()));
  }
  std::printf("wrote %zu tensors to %s\n", targets.size(), out.c_str());
}

void from_hf(const std::string& hf_dir, const std::string& out) {
  const auto args = titan::hf::model_args_from_config((std::filesystem::path(hf_dir) / "config.json").string());
  // The model knows its parameter names and shapes; the load fills its uninitialised weights.
  titan::llama3::ModelArgs shape_args = args;
  shape_args.max_seq_len = 1;  // no long RoPE tables: they are never saved
  titan::llama3::Transformer model(shape_args);
  std::vector<titan::checkpoint::ShardedTensor> targets;
  for (const auto& p : model->named_parameters())
    targets.push_back(titan::checkpoint::ShardedTensor::whole(p.key(), p.value().detach()));
  titan::hf::load_hf_model(hf_dir, targets, args);
  titan::checkpoint::Manifest m;
  m.step = 0;
  m.model_only = true;
  m.info = {{"converted_from", hf_dir}, {"hf_config", titan::hf::config_from_model_args(args, torch::kFloat32)}};
  titan::checkpoint::write_checkpoint(out, targets, m);
  std::printf("wrote %zu tensors to %s (step 0, model only)\n", targets.size(), out.c_str());
}

void to_hf(const std::string& dir, const std::string& out, const std::vector<std::string>& flags) {
  std::string dtype_name = "float32";
  std::optional<std::string> assets;
  double max_shard_mb = 5000;
  for (size_t i = 0; i + 1 < flags.size(); i += 2) {
    if (flags[i] == "--dtype") dtype_name = flags[i + 1];
    else if (flags[i] == "--hf-assets") assets = flags[i + 1];
    else if (flags[i] == "--max-shard-mb") max_shard_mb = std::stod(flags[i + 1]);
    else throw std::invalid_argument("unknown option " + flags[i]);
  }
  if (flags.size() % 2) throw std::invalid_argument("option " + flags.back() + " needs a value");
  const std::map<std::string, torch::ScalarType> dtypes = {
      {"float32", torch::kFloat32}, {"bfloat16", torch::kBFloat16}, {"float16", torch::kFloat16}};
  if (!dtypes.count(dtype_name))
    throw std::invalid_argument("--dtype '" + dtype_name + "' is not valid; valid: float32, bfloat16, float16");
  const auto dtype = dtypes.at(dtype_name);
  const Manifest m = titan::checkpoint::read_manifest(dir);
  if (!m.info.contains("hf_config")) throw std::runtime_error(dir + ": the manifest has no model description (hf_config)");
  const auto args = titan::hf::model_args_from_json(m.info["hf_config"], dir);
  std::vector<titan::checkpoint::ShardedTensor> tensors;
  for (const auto& [key, e] : m.tensors) {
    if (key.rfind("optimizer.", 0) == 0 || key.rfind("train_state.", 0) == 0) continue;
    tensors.push_back(titan::checkpoint::ShardedTensor::whole(
        key, torch::empty(e.shape, torch::TensorOptions().dtype(titan::safetensors::dtype_from_name(e.dtype, dir)))));
  }
  titan::checkpoint::load_tensors(dir, m, tensors);
  titan::hf::save_hf_model(out, tensors, args, dtype, static_cast<int64_t>(max_shard_mb * 1e6), assets);
  std::printf("wrote %zu tensors to %s (Hugging Face layout, %s)\n", tensors.size(), out.c_str(), dtype_name.c_str());
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
    if (cmd == "from-hf" && argc == 4) {
      from_hf(argv[2], argv[3]);
      return 0;
    }
    if (cmd == "to-hf" && argc >= 4) {
      to_hf(argv[2], argv[3], std::vector<std::string>(argv + 4, argv + argc));
      return 0;
    }
    return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", titan::first_line(e.what()).c_str());
    return 1;
  }
}
