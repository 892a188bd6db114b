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
  for (const auto& item : model->named_modules("", /*include_self=*/false))
    if (auto* layer = dynamic_cast<WeightModule*>(item.value().get())) plan.weights.emplace_back(item.key() + ".weight", layer);
  plan.hooks = &model->hooks;
  for (const auto& p : model->named_parameters()) {
    const std::string& fqn = p.key();
    auto ends_with = [&](const char* tail) {
      const std::string t(tail);
      return fqn.size() >= t.size() && fqn.compare(fqn.size() - t.size(), t.size(), t) == 0;
    };
    TpLayout layout = TpLayout::kRows;  // colwise wq/wk/wv/w1/w3, vocab-sharded tok_embeddings and output
    if (ends_with("attention.wo.weight") || ends_with("feed_forward.w2.weight")) layout = TpLayout::kColumns;
    if (ends_with("norm.weight")) layout = TpLayout::kReplicated;
    plan.tensor_parallel.emplace_back(fqn, layout);
  }
  plan.tensor_parallel_hooks.push_back(&model->tp);
  for (const auto& layer : model->layers->values()) plan.tensor_parallel_hooks.push_back(&layer->as<TransformerBlockImpl>()->tp);
  return plan;
}

void check_tensor_parallel_degree(const ModelArgs& args, int64_t tp) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"n_heads", args.n_heads}, {"n_kv_heads", args.kv_heads()}, {"the FFN hidden size", args.ffn_hidden_dim()},
      {"vocab_size", args.vocab_size}};
  for (const auto& [name, size] : sizes)
    if (size % tp != 0)
      throw std::invalid_argument("parallelism.tensor_parallel_degree " + std::to_string(tp) + " must divide " + name +
                                  " (" + std::to_string(size) + ")");
}

}  // namespace titan::llama3
