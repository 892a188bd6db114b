#include "models/common/cross_entropy.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "models/common/cpu_kernel.h"
#include "models/common/matmul.h"

#if TITAN_CUDA
#include <c10/cuda/CUDAGuard.h>

#include "models/common/cross_entropy_cuda.h"
#include "models/common/cuda_launch.h"
#endif

namespace titan {
namespace {

// Row by row in fp32: lse = m + log(sum exp(x - m)), loss = lse - x[label] (0 where ignored); the
// gradient of the summed loss times g: g (exp(x - lse) - onehot(label)), 0 where ignored. A row of
// a bf16 logits tensor is widened once into `row` (V floats).
template <typename S>
TITAN_ALWAYS_INLINE float row_lse(const S* xi, int64_t V, float* row) {
  for (int64_t j = 0; j < V; ++j) row[j] = cpu::load(xi[j]);
  const float m = cpu::max16(row, V);
  return m + std::log(cpu::sum16<float>(V, [&](int64_t j) { return cpu::exp_f32(row[j] - m); }));
}

template <typename S>
TITAN_ALWAYS_INLINE void forward_rows(const S* x, const int64_t* y, float* loss, float* lse, int64_t rows, int64_t V,
                                      int64_t ignore_index, float* row) {
  for (int64_t i = 0; i < rows; ++i) {
    lse[i] = row_lse(x + i * V, V, row);
    loss[i] = y[i] == ignore_index ? 0.f : lse[i] - row[y[i]];
  }
}

// The loss and, in place of the logits, the gradient of the summed loss (g = 1): each row read once.
template <typename S>
TITAN_ALWAYS_INLINE void loss_and_grad_rows(S* x, const int64_t* y, float* loss, int64_t rows, int64_t V,
                                            int64_t ignore_index, float* row) {
  for (int64_t i = 0; i < rows; ++i) {
    S* xi = x + i * V;
    const float lse = row_lse(xi, V, row);
    const bool ignored = y[i] == ignore_index;
    loss[i] = ignored ? 0.f : lse - row[y[i]];
    if (ignored) {
      for (int64_t j = 0; j < V; ++j) cpu::store(0.f, xi + j);
      continue;
    }
    for (int64_t j = 0; j < V; ++j) cpu::store(cpu::exp_f32(row[j] - lse), xi + j);
    cpu::store(cpu::exp_f32(row[y[i]] - lse) - 1.f, xi + y[i]);  // rounded once
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
TITAN_CPU_CLONES void loss_and_grad_f32(float* x, const int64_t* y, float* loss, int64_t rows, int64_t V,
                                       int64_t ignore_index, float* row) {
  loss_and_grad_rows(x, y, loss, rows, V, ignore_index, row);
}
TITAN_CPU_CLONES void loss_and_grad_bf16(uint16_t* x, const int64_t* y, float* loss, int64_t rows, int64_t V,
                                        int64_t ignore_index, float* row) {
  loss_and_grad_rows(x, y, loss, rows, V, ignore_index, row);
}
TITAN_CPU_CLONES void backward_f32(const float* x, const int64_t* y, const float* lse, float g, float* dx, int64_t rows,
                                   int64_t V, int64_t ignore_index) {
  backward_rows(x, y, lse, g, dx, rows, V, ignore_index);
}
TITAN_CPU_CLONES void backward_bf16(const uint16_t* x, const int64_t* y, const float* lse, float g, uint16_t* dx,
                                    int64_t rows, int64_t V, int64_t ignore_index) {
  backward_rows(x, y, lse, g, dx, rows, V, ignore_index);
}

void check_labels(const torch::Tensor& labels, int64_t V, int64_t ignore_index) {
  const auto bad = labels.ne(ignore_index).logical_and_(labels.lt(0).logical_or_(labels.ge(V)));  // (N)
  if (!bad.any().item<bool>()) return;
  const int64_t i = bad.nonzero()[0][0].item<int64_t>();
  TORCH_CHECK(false, "cross_entropy_sum: label ", labels[i].item<int64_t>(), " of row ", i, " is outside [0, ", V,
              ") and is not ignore_index ", ignore_index);
}

bool cpu_kernel(const torch::Tensor& logits) {
  return logits.is_cpu() && (logits.scalar_type() == torch::kFloat32 || logits.scalar_type() == torch::kBFloat16);
}

// Per row of x (N, V) contiguous fp32/bf16 and labels y (N) int64: the loss and the log-sum-exp, fp32.
std::pair<torch::Tensor, torch::Tensor> forward_cpu(const torch::Tensor& x, const torch::Tensor& y, int64_t ignore_index) {
  const int64_t N = x.size(0), V = x.size(1);
  auto loss = torch::empty({N}, torch::kFloat32), lse = torch::empty({N}, torch::kFloat32);
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(V));
    const int64_t n = end - begin;
    const int64_t* yp = y.data_ptr<int64_t>() + begin;
    float* lp = loss.data_ptr<float>() + begin;
    float* sp = lse.data_ptr<float>() + begin;
    if (x.scalar_type() == torch::kFloat32)
      forward_f32(cpu::ptr<float>(x, begin * V), yp, lp, sp, n, V, ignore_index, row.data());
    else
      forward_bf16(cpu::ptr<uint16_t>(x, begin * V), yp, lp, sp, n, V, ignore_index, row.data());
  });
  return {loss, lse};
}

// Saves the logits (the model's output, kept anyway) and one fp32 log-sum-exp per row.
struct FusedCrossEntropy : torch::autograd::Function<FusedCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& labels, int64_t ignore_index) {
    const auto x = logits.contiguous();  // (N, V)
    const auto y = labels.to(torch::kInt64).contiguous();
    check_labels(y, x.size(1), ignore_index);
    auto [loss, lse] = forward_cpu(x, y, ignore_index);
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

// The summed loss of logits (c, V) in their dtype; with `grad`, the logits are overwritten by the
// gradient of that sum. Our kernels on the CPU (fp32, bf16) and CUDA; elsewhere torch's ops in fp32.
torch::Tensor chunk_loss_(torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index, bool grad) {
  const int64_t N = logits.size(0), V = logits.size(1);
  if (cpu_kernel(logits) && !grad) return forward_cpu(logits, labels, ignore_index).first.sum();
  if (cpu_kernel(logits)) {
    auto loss = torch::empty({N}, torch::kFloat32);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(V));
      const int64_t n = end - begin;
      const int64_t* yp = labels.data_ptr<int64_t>() + begin;
      float* lp = loss.data_ptr<float>() + begin;
      if (logits.scalar_type() == torch::kFloat32)
        loss_and_grad_f32(cpu::mutable_ptr<float>(logits, begin * V), yp, lp, n, V, ignore_index, row.data());
      else
        loss_and_grad_bf16(cpu::mutable_ptr<uint16_t>(logits, begin * V), yp, lp, n, V, ignore_index, row.data());
    });
    return loss.sum();
  }
#if TITAN_CUDA
  if (logits.is_cuda()) {  // one kernel: each row read once, and written once with `grad`
    const c10::cuda::CUDAGuard guard(logits.device());
    auto loss = torch::empty({N}, logits.options().dtype(torch::kFloat32));
    check_cuda(cross_entropy_rows_cuda(cuda_dtype(logits, "cross-entropy"), logits.data_ptr(), labels.data_ptr<int64_t>(),
                                       loss.data_ptr<float>(), N, V, ignore_index, grad, cuda_stream(logits)),
               "cross-entropy");
    return loss.sum();
  }
#endif
  auto x = logits.to(torch::kFloat32);                     // (c, V): the logits themselves when fp32
  const auto valid = labels.ne(ignore_index);              // (c)
  const auto index = labels.where(valid, 0).unsqueeze(1);  // (c, 1)
  const auto lse = x.logsumexp(1, /*keepdim=*/true);       // (c, 1)
  const auto loss = (lse - x.gather(1, index)).squeeze(1).where(valid, 0).sum();
  if (grad) {  // softmax - onehot, 0 in ignored rows, in place
    x.sub_(lse).exp_().scatter_add_(1, index, torch::full_like(lse, -1)).mul_(valid.unsqueeze(1));
    if (!x.is_same(logits)) logits.copy_(x);
  }
  return loss;
}

// h (N, D) @ w^T (D, V) and the summed cross-entropy, `chunk` rows at a time. With gradients wanted,
// each chunk's logits turn into their gradient at once and leave dh and dw behind (the backward
// only scales them by the loss's gradient): no GEMM is run twice, and no (N, V) tensor exists.
struct LinearCrossEntropy : torch::autograd::Function<LinearCrossEntropy> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h, const torch::Tensor& w,
                               const torch::Tensor& labels, int64_t ignore_index, int64_t chunk, bool grad) {
    const int64_t N = h.size(0), V = w.size(0);
    const auto y = labels.to(torch::kInt64).contiguous();  // (N)
    check_labels(y, V, ignore_index);
    auto loss = torch::zeros({}, h.options().dtype(torch::kFloat32));
    torch::Tensor dh = grad ? torch::empty_like(h) : torch::Tensor();                               // (N, D)
    torch::Tensor dw;                                                                               // (V, D)
    for (int64_t begin = 0; begin < N; begin += chunk) {
      const int64_t c = std::min(chunk, N - begin);
      const auto hc = h.narrow(0, begin, c);                        // (c, D)
      auto logits = apply_linear(hc, w).contiguous();               // (c, V)
      loss += chunk_loss_(logits, y.narrow(0, begin, c), ignore_index, grad);
      if (!grad) continue;
      dh.narrow(0, begin, c).copy_(apply_linear(logits, w.t()));  // (c, V) @ (V, D)
      if (!dw.defined())  // summed in fp32 at least where several chunks add up
        dw = c < N ? apply_linear(logits.t(), hc.t()).to(at::promote_types(logits.scalar_type(), torch::kFloat32))
                   : apply_linear(logits.t(), hc.t());
      else if (logits.scalar_type() == dw.scalar_type())
        dw.addmm_(logits.t(), hc);
      else
        dw.add_(apply_linear(logits.t(), hc.t()));  // (V, c) @ (c, D), rounded once per chunk
    }
    if (grad) ctx->save_for_backward({dh, dw.defined() ? dw.to(w.scalar_type()) : torch::zeros_like(w)});  // N = 0
    return loss;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    TORCH_CHECK(saved.size() == 2, "linear_cross_entropy_sum: backward of a forward run without gradients");
    const double g = grad[0].item<double>();  // the summed loss's gradient, applied in fp32 (a Scalar)
    return {saved[0] * g, saved[1] * g, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor cross_entropy_sum(const torch::Tensor& logits, const torch::Tensor& labels, int64_t ignore_index) {
  if (cpu_kernel(logits) && logits.dim() == 2)
    return FusedCrossEntropy::apply(logits, labels, ignore_index);
  return torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat32), labels,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(ignore_index));
}

torch::Tensor linear_cross_entropy_sum(const torch::Tensor& h, const torch::Tensor& weight, const torch::Tensor& labels,
                                       int64_t ignore_index, int64_t chunk_rows) {
  TORCH_CHECK(h.dim() == 2 && weight.dim() == 2 && h.size(1) == weight.size(1) && labels.numel() == h.size(0),
              "linear_cross_entropy_sum: h (N, D), weight (V, D) and labels (N) expected, got ", h.sizes(), ", ",
              weight.sizes(), ", ", labels.sizes());
  TORCH_CHECK(h.device() == weight.device() && h.device() == labels.device(), "linear_cross_entropy_sum: h on ",
              h.device(), ", weight on ", weight.device(), " and labels on ", labels.device(), ": one device expected");
  // Chunks of logits of 2^24 elements on the CPU (64 MB in fp32), 2^28 on a GPU, and of D rows at
  // least: each chunk reads and writes the whole dw (V, D) once, more than it saves below D rows.
  const int64_t budget = h.is_cpu() ? int64_t{1} << 24 : int64_t{1} << 28;
  const int64_t chunk = chunk_rows > 0 ? chunk_rows : std::max(h.size(1), budget / weight.size(0));
  const bool grad = torch::GradMode::is_enabled() && (h.requires_grad() || weight.requires_grad());
  return LinearCrossEntropy::apply(h, weight, labels, ignore_index, chunk, grad);
}

}  // namespace titan
