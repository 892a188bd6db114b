#include "models/llama3/parallelize.h"

#include <algorithm>
#include <stdexcept>

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
    if (auto* layer = dynamic_cast<WeightModule*>(item.value().get()))
      for (const auto& [name, member] : layer->weight_slots()) plan.weights.push_back({item.key() + "." + name, layer, name, member});
  plan.hooks = &model->hooks;
  for (const auto& p : model->named_parameters()) {
    const std::string& fqn = p.key();
    auto ends_with = [&](const char* tail) {
      const std::string t(tail);
      return fqn.size() >= t.size() && fqn.compare(fqn.size() - t.size(), t.size(), t) == 0;
    };
    TpLayout layout{0};  // colwise wq/wk/wv/w1/w3, vocab-sharded tok_embeddings and output
    if (ends_with("attention.wo.weight") || ends_with("w2.weight")) layout = {1};  // rowwise wo, w2 (shared experts' too)
    const bool routed = ends_with("experts.w1") || ends_with("experts.w2") || ends_with("experts.w3");
    if (routed) plan.routed_experts.push_back(fqn);
    if (ends_with("experts.w1") || ends_with("experts.w3")) layout = {1};          // routed experts: their hidden dim
    if (ends_with("experts.w2")) layout = {2};
    if (ends_with("norm.weight") || ends_with("router.gate.weight")) layout = {};  // every tp rank routes alike
    plan.tensor_parallel.emplace_back(fqn, layout);
  }
  plan.tensor_parallel_hooks.push_back(&model->tp);
  plan.context_parallel_hooks.push_back(&model->cp);
  for (const auto& layer : model->layers->values())
    plan.context_parallel_hooks.push_back(&layer->as<TransformerBlockImpl>()->attention->cp);
  for (const auto& layer : model->layers->values()) plan.tensor_parallel_hooks.push_back(&layer->as<TransformerBlockImpl>()->tp);
  for (auto moe : model->moe_layers()) plan.expert_parallel_hooks.push_back(&moe->ep);
  return plan;
}

void check_tensor_parallel_degree(const ModelArgs& args, int64_t tp) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"n_heads", args.n_heads}, {"n_kv_heads", args.kv_heads()}, {"the FFN hidden size", args.ffn_hidden_dim()},
      {"vocab_size", args.vocab_size}, {"the MoE hidden size", args.moe ? args.moe_hidden_dim() : 0}};
  for (const auto& [name, size] : sizes)
    if (size % tp != 0)
      throw std::invalid_argument("parallelism.tensor_parallel_degree " + std::to_string(tp) + " must divide " + name +
                                  " (" + std::to_string(size) + ")");
}

std::vector<std::vector<std::string>> pipeline_stage_modules(const ModelArgs& args, int64_t num_stages,
                                                             int64_t first_less, int64_t last_less) {
  const int64_t layers = args.n_layers, effective = layers + first_less + last_less;
  auto str = [](int64_t v) { return std::to_string(v); };
  if (num_stages < 1) throw std::invalid_argument("Number of stages must be at least 1");
  if (num_stages > effective)
    throw std::invalid_argument("Number of stages (" + str(num_stages) + ") cannot be greater than effective layers (" +
                                str(effective) + ")");
  const int64_t per_stage = effective / num_stages, extra = effective % num_stages;
  if (per_stage == 0)
    throw std::invalid_argument("Configuration would result in empty stages: " + str(num_stages) + " stages for " +
                                str(effective) + " effective layers");
  if (first_less > per_stage)
    throw std::invalid_argument("parallelism.pipeline_parallel_first_stage_less_layers (" + str(first_less) +
                                ") exceeds minimum layers per stage (" + str(per_stage) + ").");
  if (last_less > per_stage)
    throw std::invalid_argument("parallelism.pipeline_parallel_last_stage_less_layers (" + str(last_less) +
                                ") exceeds minimum layers per stage (" + str(per_stage) + ").");
  std::vector<std::vector<std::string>> stages(static_cast<size_t>(num_stages));
  int64_t next_layer = 0;
  for (int64_t s = 0; s < num_stages; ++s) {
    auto& modules = stages[static_cast<size_t>(s)];
    int64_t count = per_stage + (s < extra ? 1 : 0);
    if (s == 0) {
      modules.push_back("tok_embeddings");
      count -= first_less;
    }
    if (s == num_stages - 1) count -= last_less;
    for (; count > 0 && next_layer < layers; --count) modules.push_back("layers." + str(next_layer++));
    if (s == num_stages - 1) {
      modules.push_back("norm");
      if (!args.tie_word_embeddings) modules.push_back("output");
    }
  }
  check_pipeline_stage_modules(args, stages);  // e.g. weights that leave layers to no stage
  return stages;
}

void check_pipeline_stage_modules(const ModelArgs& args, const std::vector<std::vector<std::string>>& stages) {
  std::vector<std::string> order = {"tok_embeddings"};  // forward order
  for (int64_t i = 0; i < args.n_layers; ++i) order.push_back("layers." + std::to_string(i));
  order.push_back("norm");
  if (!args.tie_word_embeddings) order.push_back("output");
  size_t next = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    const std::string where = "pipeline stage " + std::to_string(s);
    if (stages[s].empty()) throw std::invalid_argument(where + " holds no module");
    for (const auto& m : stages[s]) {
      auto it = std::find(order.begin(), order.end(), m);
      if (it == order.end()) throw std::invalid_argument(where + ": '" + m + "' is not a module of the model");
      const auto at = static_cast<size_t>(it - order.begin());
      if (at != next)
        throw std::invalid_argument(where + ": '" + m + "' comes " + (at < next ? "again or out of forward order" : "before '" +
                                    order[next] + "', which no stage holds") + " (stages hold the modules in forward order)");
      ++next;
    }
  }
  if (next != order.size()) throw std::invalid_argument("no pipeline stage holds '" + order[next] + "'");
}

}  // namespace titan::llama3
