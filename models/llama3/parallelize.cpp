#include "models/llama3/parallelize.h"

namespace titan::llama3 {

ParallelPlan parallel_plan(Transformer& model) {
  ParallelPlan plan;
  const ModelArgs& args = model->args();
  const int64_t n_units = args.n_layers + 2;  // the units Transformer::forward calls its hooks around
  plan.fsdp_units.resize(static_cast<size_t>(n_units));
  for (int64_t u = 0; u < n_units; ++u) {
    FsdpUnitPlan& unit = plan.fsdp_units[static_cast<size_t>(u)];
    // Backward starts with norm + output and then the last block right away (TorchTitan keeps the
    // last block gathered too); a tied embedding is read again by the output projection.
    const bool late = u >= n_units - 2, tied = u == 0 && args.tie_word_embeddings;
    unit.reshard_after_forward = !late && !tied;
    unit.regather_for_backward = u != 0;  // the embedding's backward reads only the token ids
    unit.kept_until_last_unit = tied;
  }
  auto unit_of = [&](const std::string& fqn) -> size_t {
    if (fqn.rfind("tok_embeddings.", 0) == 0) return 0;
    if (fqn.rfind("layers.", 0) == 0) return static_cast<size_t>(std::stoll(fqn.substr(7)) + 1);
    return static_cast<size_t>(n_units - 1);
  };
  for (const auto& p : model->named_parameters()) plan.fsdp_units[unit_of(p.key())].params.push_back(p.key());
  for (const auto& item : model->named_modules("", /*include_self=*/false)) {
    torch::nn::Module* m = item.value().get();
    if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(m)) plan.weight_slots.emplace_back(item.key() + ".weight", &linear->weight);
    else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(m)) plan.weight_slots.emplace_back(item.key() + ".weight", &emb->weight);
    else if (auto* rms = dynamic_cast<RMSNormImpl*>(m)) plan.weight_slots.emplace_back(item.key() + ".weight", &rms->weight);
  }
  plan.hooks = &model->hooks;
  return plan;
}

}  // namespace titan::llama3
