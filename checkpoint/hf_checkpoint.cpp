#include "checkpoint/hf_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>

#include "checkpoint/hf_adapter.h"
#include "checkpoint/json_fields.h"
#include "checkpoint/safetensors.h"
#include "parallel/logging.h"

namespace titan::hf {
namespace {

namespace fs = std::filesystem;
using Err = std::runtime_error;

std::vector<std::string> weight_files(const std::string& dir) {
  std::vector<std::string> files;
  const fs::path index = fs::path(dir) / kIndexName;
  if (fs::exists(index)) {
    const auto j = titan::read_json_file(index.string());
    const auto weight_map = titan::JsonFields(j, index.string()).nested("weight_map");
    std::set<std::string> unique;
    for (const auto& item : j["weight_map"].items()) unique.insert(weight_map.need_as<std::string>(item.key()));
    for (const auto& f : unique) files.push_back((fs::path(dir) / f).string());
  } else if (fs::is_directory(dir)) {  // what transformers reads without an index: model.safetensors
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    const std::string single = (fs::path(dir) / "model.safetensors").string();
    auto others = [&] {
      std::string out;
      for (const auto& f : files)
        if (f != single) out += (out.empty() ? "" : ", ") + fs::path(f).filename().string();
      return out;
    };
    if (std::find(files.begin(), files.end(), single) != files.end()) {
      if (files.size() > 1) log_warning("reading " + single + " only, as transformers does without " + kIndexName +
                                        "; ignored: " + others());
      files = {single};
    } else if (files.size() > 1) {
      throw Err("Hugging Face folder '" + dir + "' holds several .safetensors files (" + others() + ") but no " +
                kIndexName + " or model.safetensors: which of them make the model is unknown");
    }
  }
  if (files.empty()) throw Err("Hugging Face folder '" + dir + "' holds no .safetensors weights");
  return files;
}

// Natural order for the files: embedding, layers by number, final norm, output.
int64_t sort_rank(const std::string& native_key) {
  if (native_key == "tok_embeddings.weight") return -1;
  if (native_key.rfind("layers.", 0) == 0) return std::stoll(native_key.substr(7));
  return 1LL << 40;
}

void write_json_atomically(const fs::path& path, const nlohmann::json& j) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    if (!out.flush()) throw Err("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

}  // namespace

bool is_hf_folder(const std::string& dir) { return fs::exists(fs::path(dir) / kIndexName); }

void load_hf_model(const std::string& dir, std::vector<checkpoint::ShardedTensor>& targets, const llama3::ModelArgs& args) {
  std::map<std::string, checkpoint::ShardedTensor*> by_key;
  for (auto& t : targets) by_key[t.key] = &t;
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& file : weight_files(dir)) {
    const auto header = safetensors::read_header(file);
    for (const auto& info : header.tensors) {
      std::vector<std::string> natives;
      try {
        natives = to_native_keys(info.name, args);
      } catch (const std::exception& e) {
        throw Err(file + ": " + e.what());
      }
      if (natives.empty() || (natives[0] == "output.weight" && args.tie_word_embeddings)) continue;  // a tied model's copy
      for (const auto& native : natives)
        if (!by_key.count(native)) throw Err(file + ": '" + info.name + "' has no place in this model (" + native + ")");
      for (const auto& [native, w] : from_hf(info.name, safetensors::read_tensor(file, header, info), args)) {
        auto& target = *by_key.at(native);
        const auto global = target.global_shape.empty() ? target.local.sizes().vec() : target.global_shape;
        if (w.sizes().vec() != global)
          throw Err(file + ": '" + info.name + "' has shape " + c10::str(c10::IntArrayRef(info.shape)) + ", which gives " +
                    native + " the shape " + c10::str(w.sizes()) + "; the model expects " + c10::str(c10::IntArrayRef(global)));
        auto src = w;
        if (!target.offsets.empty())
          for (size_t d = 0; d < global.size(); ++d) src = src.narrow(static_cast<int64_t>(d), target.offsets[d], target.local.size(d));
        target.local.copy_(src);
        loaded.insert(native);
      }
    }
  }
  for (const auto& t : targets) {
    const auto hf_key = to_hf_key(t.key, args);
    if (hf_key && !loaded.count(t.key)) throw Err("Hugging Face folder '" + dir + "' has no '" + *hf_key + "'");
  }
}

void save_hf_model(const std::string& dir, const std::vector<checkpoint::ShardedTensor>& tensors,
                   const llama3::ModelArgs& args, torch::ScalarType dtype, int64_t max_shard_bytes,
                   const std::optional<std::string>& assets_dir) {
  fs::create_directories(dir);
  fs::remove(fs::path(dir) / kIndexName);  // the folder looks complete only once the index is back
  std::vector<const checkpoint::ShardedTensor*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](auto* a, auto* b) { return sort_rank(a->key) < sort_rank(b->key); });

  // Greedy shards in natural order.
  std::vector<std::pair<std::string, torch::Tensor>> native;
  for (const auto* t : order) native.emplace_back(t->key, t->local.detach().to(torch::kCPU).to(dtype));
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  int64_t shard_bytes = 0, total = 0;
  for (auto& [key, w] : to_hf(native, args)) {
    const int64_t n = static_cast<int64_t>(w.nbytes());
    if (shard_bytes > 0 && shard_bytes + n > max_shard_bytes) shards.emplace_back(), shard_bytes = 0;
    shards.back().emplace_back(key, w.contiguous());
    shard_bytes += n;
    total += n;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  const size_t count = shards.size();
  for (size_t i = 0; i < count; ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, count);
    safetensors::write_file((fs::path(dir) / name).string(), shards[i], {{"format", "pt"}});
    for (const auto& [key, w] : shards[i]) weight_map[key] = name;
  }
  write_json_atomically(fs::path(dir) / "config.json", config_from_model_args(args, dtype));
  if (assets_dir) {
    for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"}) {
      const fs::path src = fs::path(*assets_dir) / f;
      if (fs::exists(src)) fs::copy_file(src, fs::path(dir) / f, fs::copy_options::overwrite_existing);
    }
  }
  write_json_atomically(fs::path(dir) / kIndexName, {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
}

}  // namespace titan::hf
