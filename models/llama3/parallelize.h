// Llama 3's parallelization plan (TorchTitan's llama3/infra/parallelize.py, as data): the FSDP
// units are tok_embeddings, each block, and norm + output, as TorchTitan's fully_shard calls.
#pragma once

#include "models/common/parallel_plan.h"
#include "models/llama3/model.h"

namespace titan::llama3 {

ParallelPlan parallel_plan(Transformer& model);

}  // namespace titan::llama3
