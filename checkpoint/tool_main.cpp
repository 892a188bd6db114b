// titan_checkpoint: offline tools for native checkpoints.
//   titan_checkpoint inspect STEP_DIR            keys, shapes, dtypes, chunks, step and state
//   titan_checkpoint to-torch STEP_DIR OUT.pt [--force]
//                                                one file Python's torch.load opens as {key: tensor}
//   titan_checkpoint to-dcp STEP_DIR OUT_DIR [--force]
//                                                a native checkpoint -> a PyTorch Distributed Checkpoint
//                                                folder with TorchTitan's keys (torch.distributed.checkpoint.load)
//   titan_checkpoint from-dcp DCP_DIR STEP_DIR [--force]
//                                                a DCP folder (TorchTitan's, any sharding) -> a native checkpoint
//   titan_checkpoint from-hf HF_DIR STEP_DIR [--model_name N] [--model_flavor F] [--force]
//                                                an HF Llama folder -> a native step-0 (model only)
//   titan_checkpoint to-hf STEP_DIR OUT_DIR [--export_dtype float32|bfloat16|float16] [--hf_assets_path DIR]
//                          [--model_name N] [--model_flavor F] [--max-shard-mb N] [--force]
//                                                a native checkpoint -> an HF folder
// The flags are TorchTitan's (scripts/checkpoint_conversion); --dtype and --hf-assets still work.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>

#include "checkpoint/checkpoint_format.h"
#include "checkpoint/dcp_reader.h"
#include "checkpoint/dcp_state.h"
#include "checkpoint/dcp_writer.h"
#include "checkpoint/hf_adapter.h"
#include "checkpoint/hf_checkpoint.h"
#include "checkpoint/safetensors.h"
#include "checkpoint/torch_archive.h"
#include "models/llama3/model.h"
#include "models/llama4/model_args.h"
#include "parallel/logging.h"
#include "parallel/nearest_name.h"

namespace {

namespace fs = std::filesystem;
using titan::checkpoint::Manifest;

// A bad command line: printed as one line with exit code 2.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

struct Command {
  std::vector<std::string> positional;         // the names of the positional arguments, e.g. {"STEP_DIR", "OUT_DIR"}
  std::vector<std::string> flags;              // TorchTitan's names; all but --force take a value
  std::map<std::string, std::string> aliases;  // our earlier spellings -> TorchTitan's flag
};

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> all = {
      {"inspect", {{"STEP_DIR"}, {}, {}}},
      {"to-torch", {{"STEP_DIR", "OUT.pt"}, {"--force"}, {}}},
      {"to-dcp", {{"STEP_DIR", "OUT_DIR"}, {"--force"}, {}}},
      {"from-dcp", {{"DCP_DIR", "STEP_DIR"}, {"--force"}, {}}},
      {"from-hf", {{"HF_DIR", "STEP_DIR"}, {"--model_name", "--model_flavor", "--force"}, {}}},
      {"to-hf",
       {{"STEP_DIR", "OUT_DIR"},
        {"--export_dtype", "--hf_assets_path", "--model_name", "--model_flavor", "--max-shard-mb", "--force"},
        {{"--dtype", "--export_dtype"}, {"--hf-assets", "--hf_assets_path"}}}},
  };
  return all;
}

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;  // by TorchTitan's name; --force holds ""
  std::map<std::string, std::string> spelt;  // TorchTitan's name -> as the command line wrote it
  bool has(const std::string& flag) const { return flags.count(flag) > 0; }
  const std::string& value(const std::string& flag) const { return flags.at(flag); }
  const std::string& as_written(const std::string& flag) const { return spelt.at(flag); }
};

// `--flag value` or `--flag=value` (--force takes none); each mistake names the argument and what is valid.
Args parse(const std::string& cmd, const std::vector<std::string>& argv) {
  const Command& c = commands().at(cmd);
  std::string valid;
  for (const auto& f : c.flags) valid += (valid.empty() ? "" : ", ") + f;
  std::vector<std::string> known = c.flags;
  for (const auto& [alias, flag] : c.aliases) known.push_back(alias);
  Args a;
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      a.positional.push_back(arg);
      continue;
    }
    std::optional<std::string> value;
    if (auto eq = arg.find('='); eq != std::string::npos) value = arg.substr(eq + 1), arg = arg.substr(0, eq);
    if (std::find(known.begin(), known.end(), arg) == known.end())
      throw UsageError(cmd + ": unknown flag " + arg +
                       (known.empty()
                            ? " (it takes none)"
                            : " (did you mean " + titan::nearest_name(arg, known) + "? valid: " + valid + ")"));
    const std::string written = arg;
    if (c.aliases.count(arg)) arg = c.aliases.at(arg);
    a.spelt[arg] = written;
    if (arg == "--force") {
      if (value) throw UsageError(cmd + ": --force takes no value");
      a.flags[arg] = "";
      continue;
    }
    if (!value) {
      if (i + 1 == argv.size()) throw UsageError(cmd + ": " + written + " needs a value");
      value = argv[++i];
    }
    a.flags[arg] = *value;
  }
  if (a.positional.size() != c.positional.size()) {
    std::string names;
    for (const auto& n : c.positional) names += " " + n;
    throw UsageError(cmd + " takes" + names + " (got " + std::to_string(a.positional.size()) + " positional argument" +
                     (a.positional.size() == 1 ? "" : "s") + ")");
  }
  return a;
}

std::string usage() {
  std::string out;
  for (const auto& [cmd, c] : commands()) {
    out += out.empty() ? "usage: titan_checkpoint " : "       titan_checkpoint ";
    out += cmd;
    for (const auto& p : c.positional) out += " " + p;
    for (const auto& f : c.flags) out += " [" + f + (f == "--force" ? "]" : " ...]");
    out += "\n";
  }
  return out;
}

std::string newest_complete_step(const fs::path& folder) {
  std::string newest;
  for (const auto& [step, path] : titan::checkpoint::step_folders(folder.string()))
    if (titan::checkpoint::is_complete(path.string())) newest = path.string();
  return newest;
}

bool is_hf_export(const std::string& dir) {
  return titan::hf::is_hf_folder(dir) || fs::exists(fs::path(dir) / "config.json");
}

// A native step folder, else a one-line error saying what `dir` is instead.
void require_native_step(const std::string& dir) {
  if (!fs::exists(dir)) throw std::runtime_error("no such folder: " + dir);
  if (!fs::is_directory(dir)) throw std::runtime_error(dir + " is a file, not a checkpoint folder (step-N)");
  if (titan::checkpoint::is_complete(dir)) return;
  if (is_hf_export(dir))
    throw std::runtime_error(dir + " is a Hugging Face export (use from-hf to make it a native checkpoint)");
  if (!titan::checkpoint::step_folders(dir).empty()) {
    const std::string newest = newest_complete_step(dir);
    throw std::runtime_error(
        dir + " holds step folders, not a checkpoint: name one" +
        (newest.empty() ? std::string(" (none is complete)") : ", e.g. " + newest + " (the newest complete)"));
  }
  const std::string newest = newest_complete_step(fs::path(dir).lexically_normal().parent_path());
  throw std::runtime_error(
      dir + " is an interrupted save (no " + titan::checkpoint::kManifestName + "; " +
      (newest.empty() ? "no step beside it is complete" : "the newest complete step is " + newest) + ")");
}

// An HF model folder, else a one-line error saying what `dir` is instead.
void require_hf_folder(const std::string& dir) {
  if (!fs::exists(dir)) throw std::runtime_error("no such folder: " + dir);
  if (titan::checkpoint::is_complete(dir))
    throw std::runtime_error(dir + " is a titan.cpp checkpoint, not a Hugging Face folder (use to-hf)");
  if (!fs::exists(fs::path(dir) / "config.json"))
    throw std::runtime_error(dir + " has no config.json: not a Hugging Face model folder");
}

// TorchTitan's --model_name and --model_flavor, checked against the model `config` (config.json's
// fields) describes; `trained_as` is the training run's "model flavor" where the checkpoint records it.
void check_model(const Args& a, const nlohmann::json& config, const std::string& where, const std::string& trained_as) {
  const std::string type = config.value("model_type", "llama");
  const std::string family = type.rfind("llama4", 0) == 0 ? "llama4" : "llama3";
  if (a.has("--model_name")) {
    const std::string name = a.value("--model_name");
    if (name != "llama3" && name != "llama4")
      throw std::invalid_argument("--model_name '" + name + "' is not valid; valid: llama3, llama4");
    if (name != family)
      throw std::runtime_error("--model_name " + name + " but " + where + " holds a " + family +
                               " model (model_type '" + type + "')");
  }
  if (!a.has("--model_flavor")) return;
  const std::string flavor = a.value("--model_flavor");
  const auto names = family == "llama4" ? titan::llama4::flavor_names() : titan::llama3::flavor_names();
  if (std::find(names.begin(), names.end(), flavor) == names.end()) {
    std::string valid;
    for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
    throw std::invalid_argument("--model_flavor '" + flavor + "' is not a " + family + " flavor; valid: " + valid);
  }
  const auto args = family == "llama4" ? titan::llama4::flavor_args(flavor) : titan::llama3::flavor_args(flavor);
  titan::hf::check_config_matches(
      config, where, args,
      "--model_flavor " + flavor + " differs" + (trained_as.empty() ? "" : "; trained as " + trained_as));
}

// `path` made absolute, without a trailing separator.
fs::path resolved(const std::string& path) {
  fs::path p = fs::weakly_canonical(fs::absolute(path)).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

// Where to write `out`: itself when absent or empty, else (with --force) a temporary sibling that
// replace_output renames over it. Never the input, nor a folder holding it.
fs::path prepare_output(const std::string& in, const std::string& out, bool force) {
  const fs::path input = resolved(in), output = resolved(out);
  const auto rel = input.lexically_relative(output);
  if (!rel.empty() && *rel.begin() != "..")
    throw std::runtime_error("the output " + out + " is or holds the input " + in + "; choose another output folder");
  if (!fs::exists(output) || (fs::is_directory(output) && fs::is_empty(output))) return output;
  if (!force) throw std::runtime_error("the output " + out + " exists and is not empty; pass --force to replace it");
  const fs::path temp = output.parent_path() / ("." + output.filename().string() + ".tmp-" + std::to_string(getpid()));
  fs::remove_all(temp);
  return temp;
}

// With --force: the old output makes way only once the new one is whole.
void replace_output(const fs::path& written, const std::string& out) {
  const fs::path output = resolved(out);
  if (written == output) return;
  const fs::path old = output.parent_path() / ("." + output.filename().string() + ".old-" + std::to_string(getpid()));
  fs::rename(output, old);
  fs::rename(written, output);
  fs::remove_all(old);
}

void inspect(const std::string& dir) {
  require_native_step(dir);
  const Manifest m = titan::checkpoint::read_manifest(dir);
  int64_t bytes = 0;
  for (const auto& [key, e] : m.tensors)
    for (const auto& c : e.chunks) bytes += c.end - c.begin;
  std::printf("checkpoint %s\nstep: %lld\nmodel_only: %s\ntensors: %zu (%.3f GB)\n", dir.c_str(),
              static_cast<long long>(m.step), m.model_only ? "true" : "false", m.tensors.size(), bytes / 1e9);
  for (const auto& [key, e] : m.tensors)
    std::printf("  %-60s %-5s %-20s %zu chunk(s)\n", key.c_str(), e.dtype.c_str(),
                c10::str(c10::IntArrayRef(e.shape)).c_str(), e.chunks.size());
  std::printf("state: %s\n", m.state.dump().c_str());
}

// Every tensor of a checkpoint (ours or DCP), whole, in key order.
std::vector<titan::checkpoint::ShardedTensor> whole_tensors(const std::string& dir, const Manifest& m) {
  std::vector<titan::checkpoint::ShardedTensor> targets;
  for (const auto& [key, e] : m.tensors) {
    const auto dtype = titan::safetensors::dtype_from_name(e.dtype, dir);
    targets.push_back(
        titan::checkpoint::ShardedTensor::whole(key, torch::empty(e.shape, torch::TensorOptions().dtype(dtype))));
  }
  titan::checkpoint::load_tensors(dir, m, targets);
  return targets;
}

void to_torch(const std::string& dir, const std::string& out, bool force) {
  require_native_step(dir);
  const fs::path target = prepare_output(dir, out, force);
  const Manifest m = titan::checkpoint::read_manifest(dir);
  const auto targets = whole_tensors(dir, m);
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& t : targets) dict.insert(t.key, t.local);
  {
    std::ofstream file(target, std::ios::binary);
    try {
      titan::torch_archive::write(dict, [&](const char* p, size_t n) { file.write(p, static_cast<std::streamsize>(n)); });
    } catch (const c10::Error& e) {
      throw std::runtime_error("cannot write " + out + ": " + titan::first_line(e.what_without_backtrace()));
    }
    if (!file.flush()) throw std::runtime_error("cannot write " + out);
  }
  replace_output(target, out);
  std::printf("wrote %zu tensors to %s\n", targets.size(), out.c_str());
}

void to_dcp(const std::string& dir, const std::string& out, const Args& a) {
  require_native_step(dir);
  if (titan::dcp::is_dcp_folder(dir)) throw std::runtime_error(dir + " is a DCP folder already (use from-dcp)");
  const Manifest m = titan::checkpoint::read_manifest(dir);
  const fs::path target = prepare_output(dir, out, a.has("--force"));
  titan::dcp::Items items;
  std::vector<std::string> fqns;  // parameters with optimizer state
  const std::string moment = "optimizer.state.", suffix = ".exp_avg";
  for (auto& t : whole_tensors(dir, m)) {
    if (t.key.rfind(moment, 0) == 0 && t.key.size() > moment.size() + suffix.size() &&
        t.key.compare(t.key.size() - suffix.size(), suffix.size(), suffix) == 0)
      fqns.push_back(t.key.substr(moment.size(), t.key.size() - moment.size() - suffix.size()));
    items.tensors.emplace_back(t.key, t.local);
  }
  items.objects = titan::dcp::items_from_state(m.state, fqns);
  if (m.state.contains("lr_scheduler") && !m.state["lr_scheduler"].contains("last_lr"))
    std::fprintf(stderr, "warning: %s has no last_lr (saved before 2026-12-05): the export lacks optimizer "
                 "param_groups lr and lr_scheduler._last_lr, which TorchTitan's strict resume asks for\n", dir.c_str());
  titan::dcp::write_folder(target.string(), items);
  replace_output(target, out);
  std::printf("wrote %zu tensors and %zu other items to %s (PyTorch Distributed Checkpoint)\n", items.tensors.size(),
              items.objects.size(), out.c_str());
}

void from_dcp(const std::string& dir, const std::string& out, const Args& a) {
  if (!fs::is_directory(dir)) throw std::runtime_error("no such folder: " + dir);
  if (!titan::dcp::is_dcp_folder(dir))
    throw std::runtime_error(dir + " is not a PyTorch Distributed Checkpoint (no pickled " +
                             titan::checkpoint::kManifestName + ")");
  Manifest m = titan::checkpoint::read_manifest(dir);
  const fs::path target = prepare_output(dir, out, a.has("--force"));
  const auto tensors = whole_tensors(dir, m);
  m.tensors.clear();
  m.container = "safetensors";
  m.info = {{"converted_from", dir}};
  titan::checkpoint::write_checkpoint(target.string(), tensors, m);
  replace_output(target, out);
  std::printf("wrote %zu tensors to %s (step %lld%s)\n", tensors.size(), out.c_str(), static_cast<long long>(m.step),
              m.model_only ? ", model only" : "");
}

void from_hf(const std::string& hf_dir, const std::string& out, const Args& a) {
  require_hf_folder(hf_dir);
  const std::string config_path = (fs::path(hf_dir) / "config.json").string();
  const auto args = titan::hf::model_args_from_config(config_path);
  const auto hf_config = titan::hf::config_from_model_args(args, torch::kFloat32);
  check_model(a, hf_config, config_path, "");
  const fs::path target = prepare_output(hf_dir, out, a.has("--force"));
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
  m.info = {{"converted_from", hf_dir}, {"hf_config", hf_config}};
  titan::checkpoint::write_checkpoint(target.string(), targets, m);
  replace_output(target, out);
  std::printf("wrote %zu tensors to %s (step 0, model only)\n", targets.size(), out.c_str());
}

void to_hf(const std::string& dir, const std::string& out, const Args& a) {
  const std::string dtype_name = a.has("--export_dtype") ? a.value("--export_dtype") : "float32";
  const std::map<std::string, torch::ScalarType> dtypes = {
      {"float32", torch::kFloat32}, {"bfloat16", torch::kBFloat16}, {"float16", torch::kFloat16}};
  if (!dtypes.count(dtype_name))
    throw std::invalid_argument(a.as_written("--export_dtype") + " '" + dtype_name +
                                "' is not valid; valid: float32, bfloat16, float16");
  double max_shard_mb = 5000;
  if (a.has("--max-shard-mb")) {
    const std::string v = a.value("--max-shard-mb");
    size_t used = 0;
    try {
      max_shard_mb = std::stod(v, &used);
    } catch (const std::exception&) {
    }
    if (used != v.size() || !(max_shard_mb > 0))
      throw std::invalid_argument("--max-shard-mb '" + v + "' is not valid; valid: a positive number of megabytes");
  }
  std::optional<std::string> assets;
  if (a.has("--hf_assets_path")) {
    assets = a.value("--hf_assets_path");
    if (!fs::is_directory(*assets))
      throw std::invalid_argument(a.as_written("--hf_assets_path") + " " + *assets + ": no such folder");
  }
  require_native_step(dir);
  const Manifest m = titan::checkpoint::read_manifest(dir);
  if (!m.info.contains("hf_config"))
    throw std::runtime_error(dir + ": the manifest has no model description (hf_config)");
  const std::string trained_as = m.info.value("model", "");
  check_model(a, m.info["hf_config"], dir, trained_as);
  const auto args = titan::hf::model_args_from_json(m.info["hf_config"], dir);
  const fs::path target = prepare_output(dir, out, a.has("--force"));
  std::vector<titan::checkpoint::ShardedTensor> tensors;
  for (const auto& [key, e] : m.tensors) {
    if (key.rfind("optimizer.", 0) == 0 || key.rfind("train_state.", 0) == 0) continue;
    tensors.push_back(titan::checkpoint::ShardedTensor::whole(
        key, torch::empty(e.shape, torch::TensorOptions().dtype(titan::safetensors::dtype_from_name(e.dtype, dir)))));
  }
  titan::checkpoint::load_tensors(dir, m, tensors);
  titan::hf::save_hf_model(target.string(), tensors, args, dtypes.at(dtype_name),
                           static_cast<int64_t>(max_shard_mb * 1e6), assets);
  replace_output(target, out);
  std::printf("wrote %zu tensors to %s (Hugging Face layout, %s)\n", tensors.size(), out.c_str(), dtype_name.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (!commands().count(cmd)) {
      std::vector<std::string> names;
      for (const auto& [name, c] : commands()) names.push_back(name);
      std::fprintf(stderr, "%s", usage().c_str());
      if (cmd.empty()) return 2;
      throw UsageError("unknown command '" + cmd + "' (did you mean " + titan::nearest_name(cmd, names) + "?)");
    }
    const Args a = parse(cmd, std::vector<std::string>(argv + 2, argv + argc));
    const auto& p = a.positional;
    if (cmd == "inspect")
      inspect(p[0]);
    else if (cmd == "to-torch")
      to_torch(p[0], p[1], a.has("--force"));
    else if (cmd == "to-dcp")
      to_dcp(p[0], p[1], a);
    else if (cmd == "from-dcp")
      from_dcp(p[0], p[1], a);
    else if (cmd == "from-hf")
      from_hf(p[0], p[1], a);
    else
      to_hf(p[0], p[1], a);
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", titan::first_line(e.what()).c_str());
    return 1;
  }
}
