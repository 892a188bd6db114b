// Llama 3's parallelization plan (TorchTitan's llama3/infra/parallelize.py, as data): the FSDP
// units are tok_embeddings, each block, and norm + output, as TorchTitan's fully_shard calls;
// tensor parallel is apply_tp's plan: wq/wk/wv/w1/w3 colwise, wo/w2 rowwise, tok_embeddings and
// output sharded by vocabulary, norms sequence-parallel.
#pragma once

#include "models/common/parallel_plan.h"
#include "models/llama3/model.h"

namespace titan::llama3 {

ParallelPlan parallel_plan(Transformer& model);

// Whether the model's slices split over `tp` tensor-parallel ranks; throws std::invalid_argument
// naming the first size that does not.
void check_tensor_parallel_degree(const ModelArgs& args, int64_t tp);

}  // namespace titan::llama3
