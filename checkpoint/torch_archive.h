// torch.save's zip archives: data.pkl (a pickle) plus one record per storage (data/0, data/1, ...),
// stored uncompressed. DCP keeps one archive per item inside its .distcp files; to-torch writes one
// as a whole file. Reading goes through the data-only pickle reader, never Python.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "checkpoint/pickle_reader.h"
#include "models/common/torch_api.h"

namespace titan::torch_archive {

// The archive torch.load(weights_only=True) reads back as `value` (tensors, dicts with string
// keys, lists, numbers, strings), without TorchScript type tags, handed to `sink` piece by piece
// (never whole in memory). Returns its size in bytes. `sink` must not throw (it runs inside
// libtorch's zip writer): it keeps its error for the caller to raise after.
int64_t write(const c10::IValue& value, const std::function<void(const char*, size_t)>& sink);

// The archive at bytes [offset, offset + length) of `path`.
struct Region {
  std::string path;
  int64_t offset = 0, length = 0;
};

// A tensor archive's tensor (contiguous, on the CPU). `what` (e.g. "'layers.0.attention.wq.weight' in
// step-10/__0_0.distcp") starts every error: a missing or short file, a bad zip, a pickle that is not
// one tensor, a storage record of the wrong size.
torch::Tensor read_tensor(const Region& region, const std::string& what);

// A non-tensor archive's object (an int, a float, bytes, a dict, ...), tensors refused.
pickle::ValuePtr read_object(const Region& region, const std::string& what);

}  // namespace titan::torch_archive
