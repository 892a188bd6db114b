#include "parallel/vocab_parallel_loss.h"

namespace titan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct VocabParallelCrossEntropy : public torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& labels,
                               int64_t vocab_start, int64_t group_address, int64_t ignore_index) {
    ProcessGroup& group = *reinterpret_cast<ProcessGroup*>(group_address);
    const int64_t local_vocab = logits.size(1);
    auto z = logits.to(torch::kFloat32);                                  // (N, V/n)
    auto max = std::get<0>(z.max(1)).contiguous();  // (N)
    group.all_reduce(max, ReduceOp::kMax);
    z = z - max.unsqueeze(1);
    const auto valid = labels.ne(ignore_index);                                           // (N)
    const auto here = valid & labels.ge(vocab_start) & labels.lt(vocab_start + local_vocab);  // the target is in this slice
    const auto index = (labels - vocab_start).clamp(0, local_vocab - 1).unsqueeze(1);     // (N, 1)
    auto exp = z.exp();                                                           // (N, V/n)
    auto sums = torch::stack({z.gather(1, index).squeeze(1) * here, exp.sum(1)});  // (2, N): target logit, sum of exp
    group.all_reduce(sums);
    const auto target = sums[0], sum_exp = sums[1];
    ctx->save_for_backward({exp / sum_exp.unsqueeze(1), index, here, valid});  // softmax of this slice
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    return ((sum_exp.log() - target) * valid).sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& softmax = saved[0], &index = saved[1], &here = saved[2], &valid = saved[3];
    auto d = softmax.clone();  // (N, V/n)
    d.scatter_add_(1, index, -here.to(torch::kFloat32).unsqueeze(1));
    d.mul_(valid.to(torch::kFloat32).unsqueeze(1) * grads[0]);
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {d.to(dtype), {}, {}, {}, {}};
  }
};

}  // namespace

torch::Tensor vocab_parallel_cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels,
                                               int64_t vocab_start, ProcessGroup& group, int64_t ignore_index) {
  return VocabParallelCrossEntropy::apply(logits, labels, vocab_start, reinterpret_cast<int64_t>(&group), ignore_index);
}

}  // namespace titan
