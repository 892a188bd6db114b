// Hugging Face Llama folders: model-0000X-of-0000N.safetensors (or model.safetensors), the index
// model.safetensors.index.json and config.json, read into and written from native model tensors.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_format.h"
#include "models/llama3/model_args.h"

namespace titan::hf {

inline constexpr const char* kIndexName = "model.safetensors.index.json";

// Copies the folder's weights into `targets` (native FQNs, full or sharded pieces), un-permuting
// q/k. Throws std::runtime_error naming the file or the missing key.
void load_hf_model(const std::string& dir, std::vector<checkpoint::ShardedTensor>& targets, const llama3::ModelArgs& args);

// Writes full native model tensors as an HF folder: shards of at most max_shard_bytes, the index
// (always, written last, atomically), config.json, and the tokenizer files of assets_dir if any.
void save_hf_model(const std::string& dir, const std::vector<checkpoint::ShardedTensor>& tensors,
                   const llama3::ModelArgs& args, torch::ScalarType dtype, int64_t max_shard_bytes,
                   const std::optional<std::string>& assets_dir);

// True when dir holds an HF export (its index).
bool is_hf_folder(const std::string& dir);

}  // namespace titan::hf
