// Reading PyTorch Distributed Checkpoint (DCP) folders, as TorchTitan saves them: `.metadata` is a
// pickle of DCP's Metadata dataclass (per key: TensorStorageMetadata with the global size and each
// saved chunk's offsets and sizes, or BytesStorageMetadata; storage_data: where each item lies in
// which .distcp file), and every item is a torch.save archive at its byte range. Both are parsed
// as data (pickle_reader, torch_archive); nothing is executed.
#pragma once

#include <string>

#include "checkpoint/checkpoint_format.h"

namespace titan::dcp {

// True when dir/.metadata is a pickle (DCP's) rather than our JSON manifest.
bool is_dcp_folder(const std::string& dir);

// The folder as a Manifest of TorchTitan's keys: tensors with their chunks (file, offsets, sizes,
// byte range of the item; container "dcp"), the non-tensor items mapped into our state where they
// map (dcp_state), step = train_state.step, model_only unless it holds optimizer moments. Throws
// std::runtime_error naming the key and file for an unknown class, a malformed field or an item
// whose file is absent.
checkpoint::Manifest read_manifest(const std::string& dir);

// One saved chunk's tensor (its item's archive), checked against the chunk's dtype and sizes.
torch::Tensor read_chunk(const std::string& dir, const checkpoint::Chunk& chunk, torch::ScalarType dtype,
                         const std::string& key);

}  // namespace titan::dcp
