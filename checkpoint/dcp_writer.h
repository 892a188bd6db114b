// Writing PyTorch Distributed Checkpoint folders from one process, as torch.distributed.checkpoint.save
// does: every item a torch.save archive in __0_0.distcp, then `.metadata` (a pickle of DCP's
// Metadata, written last and atomically) with each tensor as one whole chunk.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"

namespace titan::dcp {

struct Items {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // whole tensors, any dtype DCP knows
  std::vector<std::pair<std::string, c10::IValue>> objects;    // ints, floats, strings, lists of them
};

// Writes `items` into `dir` (created; an old .metadata there is removed first). Throws
// std::runtime_error naming the file on I/O errors or the key of a tensor of an unsupported dtype.
void write_folder(const std::string& dir, const Items& items);

}  // namespace titan::dcp
