// The pieces the model tests share around a reference fixture (tests/reference/llama*_reference.py):
// its config's model arguments, token batches, the mean loss, and its AdamW and LR schedule.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "models/common/torch_api.h"
#include "models/llama3/model.h"
#include "trainer/job_config.h"

namespace titan::testing {

inline llama3::ModelArgs reference_model_args(const nlohmann::json& c) {
  llama3::ModelArgs a;
  a.dim = c["dim"], a.n_layers = c["n_layers"], a.n_heads = c["n_heads"], a.n_kv_heads = c["n_kv_heads"].get<int64_t>();
  a.vocab_size = c["vocab_size"], a.multiple_of = c["multiple_of"], a.norm_eps = c["norm_eps"];
  a.rope_theta = c["rope_theta"], a.max_seq_len = c["seq_len"];
  return a;
}

// The fixture's batch of `step`: (B, T+1) tokens.
inline torch::Tensor reference_tokens(const nlohmann::json& fixture, size_t step) {
  const auto& rows = fixture["tokens"][step];
  std::vector<int64_t> flat;
  for (const auto& row : rows)
    for (const auto& t : row) flat.push_back(t.get<int64_t>());
  return torch::tensor(flat, torch::kInt64).view({static_cast<int64_t>(rows.size()), -1});
}

// Cross entropy of the next tokens, summed (by the model, as the trainer has it) and divided by their count.
inline torch::Tensor mean_loss(llama3::Transformer& model, const torch::Tensor& tokens) {
  const int64_t T = tokens.size(1) - 1;
  const auto labels = tokens.slice(1, 1, T + 1);  // (B, T)
  return model->forward(tokens.slice(1, 0, T), labels) / static_cast<double>(labels.numel());
}

inline JobConfig::Optimizer reference_optimizer(const nlohmann::json& c) {
  JobConfig::Optimizer o;
  o.lr = c["lr"], o.beta1 = c["beta1"], o.beta2 = c["beta2"], o.eps = c["eps"], o.weight_decay = c["weight_decay"];
  return o;
}

inline JobConfig::LRScheduler reference_schedule(const nlohmann::json& c) {
  JobConfig::LRScheduler s;
  s.warmup_steps = c["warmup_steps"], s.decay_ratio = c["decay_ratio"].get<double>(), s.min_lr_factor = c["min_lr_factor"];
  return s;
}

}  // namespace titan::testing
