// Llama 3's parallelization plan (TorchTitan's llama3/infra/parallelize.py, as data): the FSDP
// units are tok_embeddings, each block, and norm + output, as TorchTitan's fully_shard calls;
// tensor parallel is apply_tp's plan: wq/wk/wv/w1/w3 colwise, wo/w2 rowwise, tok_embeddings and
// output sharded by vocabulary, norms sequence-parallel.
#pragma once

#include <string>
#include <vector>

#include "models/common/parallel_plan.h"
#include "models/llama3/model.h"

namespace titan::llama3 {

ParallelPlan parallel_plan(Transformer& model);

// Whether the model's slices split over `tp` tensor-parallel ranks; throws std::invalid_argument
// naming the first size that does not.
void check_tensor_parallel_degree(const ModelArgs& args, int64_t tp);

// The modules of each of `num_stages` pipeline stages (TorchTitan's generate_llm_fqn_per_model_part):
// the embedding counts as `first_less` layers and norm + output as `last_less`, the layers spread
// evenly, the first stages one more where they do not divide. Throws std::invalid_argument with
// TorchTitan's message for an empty stage or a weight above the layers per stage.
std::vector<std::vector<std::string>> pipeline_stage_modules(const ModelArgs& args, int64_t num_stages,
                                                             int64_t first_less, int64_t last_less);
// Whether stages given by name (parallelism.module_fqns_per_model_part) hold every module of the
// model exactly once, in forward order, none empty; throws std::invalid_argument naming the module.
void check_pipeline_stage_modules(const ModelArgs& args, const std::vector<std::vector<std::string>>& stages);

}  // namespace titan::llama3
