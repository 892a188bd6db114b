#include "models/common/cross_entropy.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "models/common/cpu_kernel.h"

namespace titan {
namespace {

// Row by row in fp32: lse = m + log(sum exp(x - m)), loss = lse - x[label] (0 where ignored); the
// gradient of the summed loss times g: g (exp(x - lse) - onehot(label)), 0 where ignored. A row of
// a bf16 logits tensor is widened once into `row` (V floats).
template <typename S>
TITAN_ALWAYS_INLINE void forward_rows(const S* x, const int64_t* y, float* loss, float* lse, int64_t rows, int64_t V,
                                      int64_t ignore_index, float* row) {
  for (int64_t i = 0; i < rows; ++i) {
    const S* xi = x + i * V;
    for (int64_t j = 0; j < V; ++j) row[j] = cpu::load(xi[j]);
    const float m = cpu::max16(row, V);
    const float s = cpu::sum16<float>(V, [&](int64_t j) { return cpu::exp_f32(row[j] - m); });
    lse[i] = m + std::log(s);
    loss[i] = y[i] == ignore_index ? 0.f : lse[i] - row[y[i]];
  }
}

template <typename S>
TITAN_ALWAYS_INLINE void backward_rows(const S* x, const int64_t* y, const float* lse, float g, S* dx, int64_t rows,
                                       int64_t V, int64_t ignore_index) {
  for (int64_t i = 0; i < rows; ++i) {
    const S* xi = x + i * V;
    S* di = dx + i * V;
    const bool ignored = y[i] == ignore_index;
    const float li = lse[i], gi = ignored ? 0.f : g;
    for (int64_t j = 0; j < V; ++j) cpu::store(gi * cpu::exp_f32(cpu::load(xi[j]) - li), di + j);
    if (!ignored) cpu::store(g * (cpu::exp_f32(cpu::load(xi[y[i]]) - li) - 1.f), di + y[i]);  // rounded once
  }
}

TITAN_CPU_CLONES void forward_f32(const float* x, const int64_t* y, float* loss, float* lse, int64_t rows, int64_t V,
                                  int64_t ignore_index, float* row) {
  forward_rows(x, y, loss, lse, rows, V, ignore_index, row);
}
TITAN_CPU_CLONES void forward_bf16(const uint16_t* x, const int64_t* y, float* loss, float* lse, int64_t rows, int64_t V,
                                   int64_t ignore_index, float* row) {
  forward_rows(x, y, loss, lse, rows, V, ignore_index, row);
}
TITAN_CPU_CLONES void backward_f32(const float* x, const int64_t* y, const float* lse, float g, float* dx, int64_t rows,
                                   int64_t V, int64_t ignore_index) {
  backward_rows(x, y, lse, g, dx, rows, V, ignore_index);
}
TITAN_CPU_CLONES void backward_bf16(const uint16_t* x, const int64_t* y, const float* lse, float g, uint16_t* dx,
                                    int64_t rows, int64_t V, int64_t ignore_index) {
  backward_rows(x, y, lse, g, dx, rows, V, ignore_index);
}

// Saves the logits (the model's output, kept anyway) and one fp32 log-sum-exp per row.
struct FusedCrossEntropy : torch::autograd::Function<FusedCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels, int64_t ignore_index) {
    const auto x = logits.contiguous();  // (N, V)
    const auto y = labels.to(torch::kInt64).contiguous();
    const int64_t N = x.size(0), V = x.size(1);
    const int64_t* yp = y.data_ptr<int64_t>();
    for (int64_t i = 0; i < N; ++i)
      TORCH_CHECK(yp[i] == ignore_index || (yp[i] >= 0 && yp[i] < V), "cross_entropy_sum: label ", yp[i], " of row ", i,
                  " is outside [0, ", V, ") and is not ignore_index ", ignore_index);
    auto loss = torch::empty({N}, torch::kFloat32), lse = torch::empty({N}, torch::kFloat32);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(V));
      const int64_t n = end - begin;
      float* lp = loss.data_ptr<float>() + begin;
      float* sp = lse.data_ptr<float>() + begin;
      if (x.scalar_type() == torch::kFloat32)
        forward_f32(cpu::ptr<float>(x, begin * V), yp + begin, lp, sp, n, V, ignore_index, row.data());
      else
        forward_bf16(cpu::ptr<uint16_t>(x, begin * V), yp + begin, lp, sp, n, V, ignore_index, row.data());
    });
    ctx->save_for_backward({x, y, lse});
    ctx->saved_data["ignore_index"] = ignore_index;
    return loss.sum();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &y = saved[1], &lse = saved[2];
    const int64_t V = x.size(1), ignore_index = ctx->saved_data["ignore_index"].toInt();
    const float g = grad[0].item<float>();  // the summed loss's gradient
    auto dx = torch::empty_like(x);
    at::parallel_for(0, x.size(0), 1, [&](int64_t begin, int64_t end) {
      const int64_t n = end - begin;
      const int64_t* yp = y.data_ptr<int64_t>() + begin;
      const float* sp = lse.data_ptr<float>() + begin;
      if (x.scalar_type() == torch::kFloat32)
        backward_f32(cpu::ptr<float>(x, begin * V), yp, sp, g, cpu::mutable_ptr<float>(dx, begin * V), n, V,
                     ignore_index);
      else
        backward_bf16(cpu::ptr<uint16_t>(x, begin * V), yp, sp, g, cpu::mutable_ptr<uint16_t>(dx, begin * V), n, V,
                      ignore_index);
    });
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index) {
  const auto dtype = logits.scalar_type();
  if (logits.is_cpu() && logits.dim() == 2 && (dtype == torch::kFloat32 || dtype == torch::kBFloat16))
    return FusedCrossEntropy::apply(logits, labels, ignore_index);
  return torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), labels,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(ignore_index));
}

}  // namespace titan
