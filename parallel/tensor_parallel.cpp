#include "parallel/tensor_parallel.h"

#include "models/common/cross_entropy.h"
#include "models/common/matmul.h"
#include "parallel/autograd_collectives.h"
#include "parallel/vocab_parallel_loss.h"

namespace titan {

torch::Tensor TensorParallel::embed(const torch::Tensor& tokens, const torch::Tensor& weight) {
  const int64_t rows = weight.size(0), start = group_.rank() * rows;  // this rank's vocabulary [start, start + rows)
  const auto elsewhere = tokens.lt(start) | tokens.ge(start + rows);    // (B, T)
  const auto local = (tokens - start).masked_fill(elsewhere, 0);
  auto out = at::embedding(weight, local).masked_fill(elsewhere.unsqueeze(-1), 0);  // (B, T, dim), partial
  return reduce_scatter_sequence(out, group_);                                       // (B, T/tp, dim)
}

torch::Tensor TensorParallel::sublayer_input(const torch::Tensor& x) { return gather_sequence(x, group_); }

torch::Tensor TensorParallel::sublayer_output(const torch::Tensor& x) { return reduce_scatter_sequence(x, group_); }

torch::Tensor TensorParallel::project(const torch::Tensor& h, const torch::Tensor& weight) {
  auto logits = apply_linear(gather_sequence(h, group_), weight);  // (B, T, vocab/tp)
  return loss_parallel_ ? logits : gather_last_dim(logits, group_);  // (B, T, vocab) without loss parallel
}

torch::Tensor TensorParallel::loss_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels) {
  const auto logits = project(h, weight).flatten(0, 1);  // (B*T, vocab or vocab/tp)
  const auto flat_labels = labels.reshape({-1});          // (B*T)
  if (loss_parallel_) return vocab_parallel_cross_entropy_sum(logits, flat_labels, group_.rank() * logits.size(1), group_);
  return cross_entropy_sum(logits, flat_labels);
}

}  // namespace titan
