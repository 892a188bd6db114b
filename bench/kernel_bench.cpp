// The kernels the trainer uses against the forms they replaced, alternating in one run, with the
// largest error of each against float64: the model's attention (models/common/causal_attention:
// SDPA, with our CPU flash kernels where they are faster) vs our former attention by query blocks,
// kept here as the baseline; our CPU flash forward (fp32) and backward (bf16, fp32) vs SDPA's, and
// in bf16 vs SDPA's fp32 backward on upcast tensors (a lever not built); the fused
// AdamW (at::_fused_adamw_) vs torch.optim's op-by-op form; the clip inside the fused step vs a
// multiply before it; our one-pass RMSNorm vs at::rms_norm (a composite on the CPU); the one-pass
// CPU RoPE vs its ATen-op form; the one-pass SwiGLU gate vs silu(a) * b; the one-pass cross-entropy
// vs torch's; the projection and cross-entropy by chunks of rows vs whole logits; the one-pass
// float64 gradient norm vs norms of 1M-element slices; bf16 GEMMs natively vs with fp32
// accumulation (the start-up probe picks per machine); the data loader's time per batch. Run
// through bench/kernel_bench.sh (one row: its function's name as second argument).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "models/common/causal_attention.h"
#include "models/common/cross_entropy.h"
#include "models/common/flash_attention_cpu.h"
#include "models/common/matmul.h"
#include "models/common/rms_norm.h"
#include "models/common/swiglu.h"
#include "models/llama3/rope.h"
#include "parallel/grad_norm.h"
#include "trainer/dataloader.h"
#include "trainer/document_source.h"
#include "trainer/optimizer.h"
#include "trainer/tokenizer.h"

namespace {

// Best wall time of fn over `rounds` runs, after one warm-up run, in milliseconds.
double best_ms(const std::function<void()>& fn, int rounds) {
  fn();
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

double max_error(const torch::Tensor& a, const torch::Tensor& exact) {
  return (a.to(torch::kFloat64) - exact).abs().max().item<double>();
}

// The attention the model had before SDPA: block b of 128 queries (at least 4 blocks) attends to
// keys [0, end_b) only. q (B, KV, rep, T, hd), k (B, KV, hd, T), v (B, KV, T, hd).
torch::Tensor blocked_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t B = q.size(0), KV = q.size(1), rep = q.size(2), T = q.size(3), hd = q.size(4);
  const int64_t blocks = T < 128 ? 1 : std::max<int64_t>(4, T / 128), block = (T + blocks - 1) / blocks;
  std::vector<torch::Tensor> outs;
  for (int64_t begin = 0; begin < T; begin += block) {
    const int64_t n = std::min(block, T - begin), end = begin + n;
    auto scores = titan::batched_matmul(q.narrow(3, begin, n).reshape({B, KV, rep * n, hd}), k.narrow(3, 0, end))
                      .mul_(1.0 / std::sqrt(static_cast<double>(hd)));  // (B, KV, rep*n, end)
    auto masked = torch::ones({n, end}, torch::kBool).triu(begin + 1);
    scores = scores.view({B, KV, rep, n, end}).masked_fill(masked, -std::numeric_limits<double>::infinity());
    auto probs = torch::softmax(scores, -1).view({B, KV, rep * n, end});
    outs.push_back(titan::batched_matmul(probs, v.narrow(2, 0, end)).view({B, KV, rep, n, hd}));
  }
  return torch::cat(outs, 3);  // (B, KV, rep, T, hd)
}

// Forward + backward of one attention layer's core; errors of output and dq against float64.
void attention(const char* model, int64_t B, int64_t KV, int64_t rep, int64_t T, int64_t hd, torch::ScalarType dtype,
               int rounds) {
  torch::manual_seed(0);
  const int64_t H = KV * rep;
  auto q = torch::randn({B, H, T, hd}).to(dtype).requires_grad_(true);  // (B, H, T, hd)
  auto k = torch::randn({B, KV, T, hd}).to(dtype).requires_grad_(true);  // (B, KV, T, hd)
  auto v = torch::randn({B, KV, T, hd}).to(dtype).requires_grad_(true);
  auto grad = torch::randn({B, H, T, hd}).to(dtype);
  auto blocked = [&] { return blocked_attention(q.view({B, KV, rep, T, hd}), k.transpose(2, 3), v).view({B, H, T, hd}); };
  auto sdpa = [&] { return titan::causal_attention(q, k, v); };
  auto exact_of = [&](const torch::Tensor& q64, const torch::Tensor& k64, const torch::Tensor& v64) {
    auto kk = k64.repeat_interleave(rep, 1), vv = v64.repeat_interleave(rep, 1);
    auto s = torch::matmul(q64, kk.transpose(2, 3)) / std::sqrt(static_cast<double>(hd));
    s = s.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
    return torch::matmul(torch::softmax(s, -1), vv);
  };
  auto q64 = q.detach().to(torch::kFloat64).requires_grad_(true);
  auto exact = exact_of(q64, k.detach().to(torch::kFloat64), v.detach().to(torch::kFloat64));
  exact.backward(grad.to(torch::kFloat64));
  auto errors = [&](const std::function<torch::Tensor()>& f) {
    q.mutable_grad() = torch::Tensor();
    auto out = f();
    out.backward(grad);
    return std::make_pair(max_error(out, exact.detach()), max_error(q.grad(), q64.grad()));
  };
  const auto [ours_out, ours_dq] = errors(blocked);
  const auto [sdpa_out, sdpa_dq] = errors(sdpa);
  double ours_ms = 0, sdpa_ms = 0;
  for (int r = 0; r < 2; ++r) {  // alternate: the machine's load changes over a run
    ours_ms += best_ms([&] { blocked().backward(grad); }, rounds) / 2;
    sdpa_ms += best_ms([&] { sdpa().backward(grad); }, rounds) / 2;
  }
  std::printf(
      "attention fwd+bwd %s, %s layer (B %ld, %ld kv x %ld heads, T %ld, hd %ld): query blocks %.1f ms, "
      "error out %.2g dq %.2g; the model's (SDPA, our CPU kernels where faster) %.1f ms, error out %.2g dq %.2g: "
      "%.2fx\n",
      c10::toString(dtype), model, B, KV, rep, T, hd, ours_ms, ours_out, ours_dq, sdpa_ms, sdpa_out, sdpa_dq,
      ours_ms / sdpa_ms);
}

// SDPA's CPU flash attention backward against its forward and against ours; in bf16 also the same
// backward run in fp32 on the upcast tensors (the gradients rounded once at the end); largest error of
// dq, dk and dv against float64. q, k, v (B, H, T, hd), transposed views as in the model: grouped heads
// expanded; causal, or a full block of context parallelism's ring.
void attention_backward(const char* model, int64_t B, int64_t H, int64_t T, int64_t hd, bool causal,
                        torch::ScalarType dtype, int rounds) {
  torch::manual_seed(0);
  auto as_dtype = [&](const torch::Tensor& t) { return t.to(dtype); };
  auto fp32 = [](const torch::Tensor& t) { return t.to(torch::kFloat32); };
  // (B, H, T, hd) views of (B, T, H, hd) tensors, as the model hands them over
  auto randn = [&] { return as_dtype(torch::randn({B, T, H, hd})).transpose(1, 2); };
  const auto q = randn(), k = randn(), v = randn(), grad = randn();
  const auto forward = at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal);
  const torch::Tensor out = std::get<0>(forward), lse = std::get<1>(forward);  // (B, H, T, hd), (B, H, T) fp32
  auto native = [&] {
    return at::_scaled_dot_product_flash_attention_for_cpu_backward(grad, q, k, v, out, lse, 0.0, causal);
  };
  auto via_fp32 = [&] {
    const auto d = at::_scaled_dot_product_flash_attention_for_cpu_backward(fp32(grad), fp32(q), fp32(k), fp32(v),
                                                                            fp32(out), lse, 0.0, causal);
    return std::make_tuple(as_dtype(std::get<0>(d)), as_dtype(std::get<1>(d)), as_dtype(std::get<2>(d)));
  };
  auto q64 = q.to(torch::kFloat64).requires_grad_(true), k64 = k.to(torch::kFloat64).requires_grad_(true),
       v64 = v.to(torch::kFloat64).requires_grad_(true);
  at::scaled_dot_product_attention(q64, k64, v64, {}, 0.0, causal).backward(grad.to(torch::kFloat64));
  auto error = [&](const std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>& d) {
    return std::max({max_error(std::get<0>(d), q64.grad()), max_error(std::get<1>(d), k64.grad()),
                     max_error(std::get<2>(d), v64.grad())});
  };
  auto ours = [&] { return titan::flash_backward(grad, q, k, v, out, lse, causal); };
  const bool have_ours = titan::flash_supported(q, k, causal), bf16 = dtype == torch::kBFloat16;
  const double native_err = error(native()), fp32_err = bf16 ? error(via_fp32()) : NAN,
               ours_err = have_ours ? error(ours()) : NAN;
  double forward_ms = 0, native_ms = 0, fp32_ms = bf16 ? 0 : NAN, ours_ms = have_ours ? 0 : NAN;
  for (int r = 0; r < 2; ++r) {
    forward_ms += best_ms([&] { at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal); }, rounds) / 2;
    native_ms += best_ms([&] { native(); }, rounds) / 2;
    if (bf16) fp32_ms += best_ms([&] { via_fp32(); }, rounds) / 2;
    if (have_ours) ours_ms += best_ms([&] { ours(); }, rounds) / 2;
  }
  std::printf(
      "attention backward %s, %s layer, %s (B %ld, %ld heads, T %ld, hd %ld): forward %.1f ms; "
      "SDPA's backward %.1f ms (%.1fx the forward), error %.2g; ",
      c10::toString(dtype), model, causal ? "causal" : "full block", B, H, T, hd, forward_ms, native_ms,
      native_ms / forward_ms, native_err);
  if (bf16) std::printf("through fp32 %.1f ms, error %.2g (%.2fx); ", fp32_ms, fp32_err, native_ms / fp32_ms);
  std::printf("ours (brgemm) %.1f ms, error %.2g (%.2fx)\n", ours_ms, ours_err, native_ms / ours_ms);
}

// SDPA's CPU flash attention forward in fp32 or bf16 against ours (flash_attention_cpu.h); largest error of
// the output against float64. q, k, v (B, H, T, hd), transposed views as in the model; causal, or a full block of
// context parallelism's ring.
void attention_forward(const char* model, int64_t B, int64_t H, int64_t T, int64_t hd, bool causal,
                       torch::ScalarType dtype, int rounds) {
  torch::manual_seed(0);
  auto randn = [&] { return torch::randn({B, T, H, hd}).transpose(1, 2).to(dtype); };  // as the model hands them over
  const auto q = randn(), k = randn(), v = randn();
  const auto exact = at::scaled_dot_product_attention(q.to(torch::kFloat64), k.to(torch::kFloat64),
                                                      v.to(torch::kFloat64), {}, 0.0, causal);
  auto sdpa = [&] { return at::_scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal); };
  auto ours = [&] { return titan::flash_forward(q, k, v, causal); };
  const bool have_ours = titan::flash_supported(q, k, causal);
  const double sdpa_err = max_error(std::get<0>(sdpa()), exact),
               ours_err = have_ours ? max_error(ours().first, exact) : NAN;
  const double lse_diff =
      have_ours ? (ours().second - std::get<1>(sdpa())).abs().max().item<double>() : NAN;  // the backward reads it
  double sdpa_ms = 0, ours_ms = have_ours ? 0 : NAN;
  for (int r = 0; r < 2; ++r) {
    sdpa_ms += best_ms([&] { sdpa(); }, rounds) / 2;
    if (have_ours) ours_ms += best_ms([&] { ours(); }, rounds) / 2;
  }
  std::printf(
      "attention forward %s, %s layer, %s (B %ld, %ld heads, T %ld, hd %ld): SDPA %.1f ms, error %.2g; ours "
      "(brgemm) %.1f ms, error %.2g, log-sum-exp within %.2g of SDPA's (%.2fx)\n",
      c10::toString(dtype), model, causal ? "causal" : "full block", B, H, T, hd, sdpa_ms, sdpa_err, ours_ms, ours_err,
      lse_diff, sdpa_ms / ours_ms);
}

// The mid model's parameter shapes (158M parameters).
std::vector<std::vector<int64_t>> mid_model_shapes() {
  std::vector<std::vector<int64_t>> shapes = {{32000, 1024}, {32000, 1024}, {1024}};
  for (int l = 0; l < 8; ++l)
    for (const auto& s : std::vector<std::vector<int64_t>>{
             {1024, 1024}, {512, 1024}, {512, 1024}, {1024, 1024}, {2816, 1024}, {1024, 2816}, {2816, 1024}, {1024}, {1024}})
      shapes.push_back(s);
  return shapes;
}

void adamw(int rounds) {
  torch::manual_seed(1);
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::vector<torch::Tensor> ref, m, v;
  for (const auto& shape : mid_model_shapes()) {
    auto p = torch::randn(shape).requires_grad_(true);
    p.mutable_grad() = torch::randn(shape);
    params.emplace_back("p" + std::to_string(params.size()), p);
    ref.push_back(p.detach().clone());
    m.push_back(torch::zeros(shape));
    v.push_back(torch::zeros(shape));
  }
  titan::JobConfig::Optimizer c;
  titan::AdamW fused(params, c);
  const double lr = 1e-4;
  int step = 0;
  auto op_by_op = [&] {  // torch.optim's single-tensor AdamW, on copies of the same parameters
    torch::NoGradGuard no_grad;
    ++step;
    const double bc1 = 1 - std::pow(c.beta1, step), bc2 = 1 - std::pow(c.beta2, step);
    for (size_t i = 0; i < ref.size(); ++i) {
      const auto& g = params[i].second.grad();
      ref[i].mul_(1 - lr * c.weight_decay);
      m[i].mul_(c.beta1).add_(g, 1 - c.beta1);
      v[i].mul_(c.beta2).addcmul_(g, g, 1 - c.beta2);
      ref[i].addcdiv_(m[i], (v[i].sqrt() / std::sqrt(bc2)).add_(c.eps), -lr / bc1);
    }
  };
  double ops_ms = 0, fused_ms = 0;
  for (int r = 0; r < 2; ++r) {
    ops_ms += best_ms(op_by_op, rounds) / 2;
    fused_ms += best_ms([&] { fused.step(lr); }, rounds) / 2;
  }
  double diff = 0;  // the same steps from the same start agree to fp32 rounding
  for (size_t i = 0; i < ref.size(); ++i) diff = std::max(diff, (ref[i] - params[i].second.detach()).abs().max().item<double>());
  std::printf("AdamW step, mid model (158M fp32 parameters): op-by-op %.0f ms, fused (AdamW::step: trainer/adam_cpu.h) %.0f ms: %.2fx "
              "(largest parameter difference after %d steps: %.2g)\n",
              ops_ms, fused_ms, ops_ms / fused_ms, step, diff);
}

// The clip and the AdamW step of the mid model's parameters: the former form, the gradients multiplied by
// the coefficient (at::_foreach_mul_, torch's clip_grad_norm_) then the fused step, vs the fused step
// dividing them by 1 / coefficient as it reads them (AdamW::step's grad_coef). Each form on its own
// copies of the same parameters and gradients; the largest difference between the two after as many steps.
void clip(torch::ScalarType dtype, int rounds) {
  torch::manual_seed(3);
  std::vector<std::pair<std::string, torch::Tensor>> before, now;
  std::vector<torch::Tensor> before_grads;
  for (const auto& shape : mid_model_shapes()) {
    auto p = torch::randn(shape).to(dtype).requires_grad_(true), q = p.detach().clone().requires_grad_(true);
    p.mutable_grad() = torch::randn(shape).to(dtype);
    q.mutable_grad() = p.grad().clone();
    before_grads.push_back(p.grad());
    before.emplace_back("p" + std::to_string(before.size()), p);
    now.emplace_back("p" + std::to_string(now.size()), q);
  }
  titan::JobConfig::Optimizer c;
  titan::AdamW before_opt(before, c), now_opt(now, c);
  const double lr = 1e-4, coef = 0.999;  // gradients shrink slowly over the repeated steps
  double before_ms = 0, now_ms = 0;
  for (int r = 0; r < 2; ++r) {
    before_ms += best_ms(
                     [&] {
                       at::_foreach_mul_(before_grads, coef);
                       before_opt.step(lr);
                     },
                     rounds) /
                 2;
    now_ms += best_ms([&] { now_opt.step(lr, coef); }, rounds) / 2;
  }
  double diff = 0;
  for (size_t i = 0; i < before.size(); ++i)
    diff = std::max(diff, (before[i].second - now[i].second).detach().abs().max().item<double>());
  std::printf(
      "clip + AdamW step, mid model (158M %s parameters): multiply then step %.0f ms, clip in the fused step %.0f ms: "
      "%.2fx (largest parameter difference after %d steps: %.2g)\n",
      c10::toString(dtype), before_ms, now_ms, before_ms / now_ms, 2 * (rounds + 1), diff);
}

// The clipped AdamW step of the mid model's parameters: libtorch's fused kernel (at::_fused_adamw_ with
// grad_scale, which stores every divided gradient back) vs ours (trainer/adam_cpu.h, AdamW::step on
// the CPU: the same arithmetic, the gradients only read). Each on its own copies of the same
// parameters, state and gradients (their agreement: tests/unit/trainer/test_adam_cpu.cpp).
void adam_step(torch::ScalarType dtype, int rounds) {
  torch::manual_seed(4);
  std::vector<std::pair<std::string, torch::Tensor>> ours;
  std::vector<torch::Tensor> params, grads, m, v, steps;
  for (const auto& shape : mid_model_shapes()) {
    auto p = torch::randn(shape).to(dtype), g = torch::randn(shape).to(dtype);
    params.push_back(p);
    grads.push_back(g);
    m.push_back(torch::zeros_like(p));
    v.push_back(torch::zeros_like(p));
    steps.push_back(torch::zeros({}));
    auto q = p.clone().requires_grad_(true);
    q.mutable_grad() = g.clone();
    ours.emplace_back("p" + std::to_string(ours.size()), q);
  }
  titan::JobConfig::Optimizer c;
  titan::AdamW opt(ours, c);
  const double lr = 1e-4, coef = 0.999;
  const auto scale = torch::full({}, 1.0 / coef);
  auto libtorch = [&] {
    at::_foreach_add_(steps, 1);
    at::_fused_adamw_(params, grads, m, v, {}, steps, lr, c.beta1, c.beta2, c.weight_decay, c.eps, false, false, scale);
  };
  double libtorch_ms = 0, ours_ms = 0;
  for (int r = 0; r < 2; ++r) {
    libtorch_ms += best_ms(libtorch, rounds) / 2;
    ours_ms += best_ms([&] { opt.step(lr, coef); }, rounds) / 2;
  }
  std::printf(
      "clipped AdamW step, mid model (158M %s parameters): libtorch's fused kernel %.0f ms, ours %.0f ms: %.2fx\n",
      c10::toString(dtype), libtorch_ms, ours_ms, libtorch_ms / ours_ms);
}

void rms_norm(torch::ScalarType dtype, int rounds) {
  torch::manual_seed(2);
  const int64_t rows = 1024, dim = 1024;  // the mid model: seq 1024 x dim 1024
  auto x = torch::randn({rows, dim}).to(dtype).requires_grad_(true);
  auto w = (torch::rand({dim}) + 0.5).to(dtype).requires_grad_(true);
  auto grad = torch::randn({rows, dim}).to(dtype);
  auto aten = [&] { return at::rms_norm(x, {dim}, w, 1e-5); };  // its backward: autograd of the composite, op by op
  auto ours = [&] { return titan::rms_norm(x, w, 1e-5); };        // one pass each way
  auto x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
  auto w64 = w.detach().to(torch::kFloat64).requires_grad_(true);
  auto y64 = x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + 1e-5) * w64;
  y64.backward(grad.to(torch::kFloat64));
  auto grad_errors = [&](const std::function<torch::Tensor()>& f) {  // output and both gradients
    x.mutable_grad() = torch::Tensor(), w.mutable_grad() = torch::Tensor();
    auto y = f();
    y.backward(grad);
    return std::max({max_error(y.detach(), y64.detach()), max_error(x.grad(), x64.grad()), max_error(w.grad(), w64.grad())});
  };
  const double aten_err = grad_errors(aten), ours_err = grad_errors(ours);
  double aten_ms = 0, ours_ms = 0;
  for (int r = 0; r < 2; ++r) {
    aten_ms += best_ms([&] { aten().backward(grad); }, rounds) / 2;
    ours_ms += best_ms([&] { ours().backward(grad); }, rounds) / 2;
  }
  std::printf("RMSNorm fwd+bwd %s (%ld x %ld): at::rms_norm %.2f ms, error %.2g; one pass each way %.2f ms, "
              "error %.2g: one pass %.2fx\n",
              c10::toString(dtype), rows, dim, aten_ms, aten_err, ours_ms, ours_err, aten_ms / ours_ms);
}

// Forward + backward of the query RoPE of one attention layer; errors against float64.
void rope(const char* model, int64_t B, int64_t T, int64_t H, int64_t hd, torch::ScalarType dtype, int rounds) {
  torch::manual_seed(3);
  titan::llama3::ModelArgs a;
  a.dim = H * hd, a.n_heads = H, a.max_seq_len = T, a.rope_theta = 500000.0;
  const auto [cos, sin] = titan::llama3::rope_tables(a);
  auto x = torch::randn({B, T, H, hd}).to(dtype).requires_grad_(true);
  auto grad = torch::randn({B, T, H, hd}).to(dtype);
  const auto x64 = torch::view_as_complex(x.detach().to(torch::kFloat64).view({B, T, H, hd / 2, 2}));
  const auto rot = torch::complex(cos.to(torch::kFloat64), sin.to(torch::kFloat64)).view({1, T, 1, hd / 2});
  const auto exact = torch::view_as_real(x64 * rot).view({B, T, H, hd});
  const double ops_err = max_error(titan::llama3::apply_rope_composite(x, cos, sin), exact);
  const double fused_err = max_error(titan::llama3::apply_rope(x, cos, sin), exact);
  double ops_ms = 0, fused_ms = 0;
  for (int r = 0; r < 2; ++r) {
    ops_ms += best_ms([&] { titan::llama3::apply_rope_composite(x, cos, sin).backward(grad); }, rounds) / 2;
    fused_ms += best_ms([&] { titan::llama3::apply_rope(x, cos, sin).backward(grad); }, rounds) / 2;
  }
  std::printf("RoPE fwd+bwd %s %s (%ld x %ld x %ld x %ld): ATen ops %.2f ms, error %.2g; one pass %.2f ms, error %.2g: "
              "one pass %.2fx\n",
              model, c10::toString(dtype), B, T, H, hd, ops_ms, ops_err, fused_ms, fused_err, ops_ms / fused_ms);
}

// Forward + backward of one FFN's gate silu(a) * b; largest error of the output and both gradients
// against float64.
void swiglu(const char* model, int64_t rows, int64_t hidden, torch::ScalarType dtype, int rounds) {
  torch::manual_seed(4);
  auto a = (torch::randn({rows, hidden}) * 2).to(dtype).requires_grad_(true);
  auto b = torch::randn({rows, hidden}).to(dtype).requires_grad_(true);
  auto grad = torch::randn({rows, hidden}).to(dtype);
  auto ops = [&] { return torch::silu(a) * b; };  // autograd keeps a, silu(a) and b
  auto fused = [&] { return titan::swiglu(a, b); };
  auto a64 = a.detach().to(torch::kFloat64).requires_grad_(true), b64 = b.detach().to(torch::kFloat64).requires_grad_(true);
  auto y64 = torch::silu(a64) * b64;
  y64.backward(grad.to(torch::kFloat64));
  auto errors = [&](const std::function<torch::Tensor()>& f) {
    a.mutable_grad() = torch::Tensor(), b.mutable_grad() = torch::Tensor();
    auto y = f();
    y.backward(grad);
    return std::max({max_error(y.detach(), y64.detach()), max_error(a.grad(), a64.grad()), max_error(b.grad(), b64.grad())});
  };
  const double ops_err = errors(ops), fused_err = errors(fused);
  double ops_ms = 0, fused_ms = 0;
  for (int r = 0; r < 2; ++r) {
    ops_ms += best_ms([&] { ops().backward(grad); }, rounds) / 2;
    fused_ms += best_ms([&] { fused().backward(grad); }, rounds) / 2;
  }
  std::printf("SwiGLU gate fwd+bwd %s %s (%ld x %ld): silu(a) * b %.2f ms, error %.2g; one pass %.2f ms, error %.2g: "
              "one pass %.2fx\n",
              model, c10::toString(dtype), rows, hidden, ops_ms, ops_err, fused_ms, fused_err, ops_ms / fused_ms);
}

// Forward + backward of the summed cross-entropy of (N, V) logits: torch's (fp32 copy, log-softmax,
// nll, a dense gradient of the loss) vs one pass per row each way; largest error of the loss and the
// gradient against float64.
void cross_entropy(const char* model, int64_t N, int64_t V, torch::ScalarType dtype, int rounds) {
  torch::manual_seed(6);
  auto x = (torch::randn({N, V}) * 2).to(dtype).requires_grad_(true);
  auto labels = torch::randint(0, V, {N}, torch::kInt64);
  namespace F = torch::nn::functional;
  auto torchs = [&] { return F::cross_entropy(x.to(torch::kFloat32), labels, F::CrossEntropyFuncOptions().reduction(torch::kSum)); };
  auto fused = [&] { return titan::cross_entropy_sum(x, labels); };
  auto x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
  auto y64 = F::cross_entropy(x64, labels, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  y64.backward();
  auto errors = [&](const std::function<torch::Tensor()>& f) {
    x.mutable_grad() = torch::Tensor();
    auto y = f();
    y.backward();
    return std::max(std::abs(y.item<double>() - y64.item<double>()) / y64.item<double>(), max_error(x.grad(), x64.grad()));
  };
  const double torch_err = errors(torchs), fused_err = errors(fused);
  double torch_ms = 0, fused_ms = 0;
  for (int r = 0; r < 2; ++r) {
    torch_ms += best_ms([&] { torchs().backward(); }, rounds) / 2;
    fused_ms += best_ms([&] { fused().backward(); }, rounds) / 2;
  }
  std::printf("cross-entropy fwd+bwd %s %s (%ld x %ld): torch %.2f ms, error %.2g; one pass %.2f ms, error %.2g: "
              "one pass %.2fx\n",
              model, c10::toString(dtype), N, V, torch_ms, torch_err, fused_ms, fused_err, torch_ms / fused_ms);
}

// Forward + backward of the output projection and the summed cross-entropy: logits = h @ w^T (N, V)
// then the one-pass cross-entropy (the form before) vs chunks of rows whose logits turn into their
// gradient at once (linear_cross_entropy_sum); largest errors of the loss, dh and dw against float64.
void linear_cross_entropy(const char* model, int64_t N, int64_t D, int64_t V, torch::ScalarType dtype, int rounds) {
  torch::manual_seed(7);
  auto h = torch::randn({N, D}).to(dtype).requires_grad_(true);
  auto w = (torch::randn({V, D}) / std::sqrt(static_cast<double>(D))).to(dtype).requires_grad_(true);
  auto labels = torch::randint(0, V, {N}, torch::kInt64);
  auto separate = [&] { return titan::cross_entropy_sum(titan::apply_linear(h, w), labels); };
  auto fused = [&] { return titan::linear_cross_entropy_sum(h, w, labels); };
  namespace F = torch::nn::functional;
  auto h64 = h.detach().to(torch::kFloat64).requires_grad_(true), w64 = w.detach().to(torch::kFloat64).requires_grad_(true);
  auto y64 = F::cross_entropy(F::linear(h64, w64), labels, F::CrossEntropyFuncOptions().reduction(torch::kSum));
  y64.backward();
  auto errors = [&](const std::function<torch::Tensor()>& f) {
    h.mutable_grad() = w.mutable_grad() = torch::Tensor();
    auto y = f();
    y.backward();
    return std::max({std::abs(y.item<double>() - y64.item<double>()) / y64.item<double>(), max_error(h.grad(), h64.grad()),
                     max_error(w.grad(), w64.grad())});
  };
  const double separate_err = errors(separate), fused_err = errors(fused);
  double separate_ms = 0, fused_ms = 0;
  for (int r = 0; r < 2; ++r) {
    separate_ms += best_ms([&] { separate().backward(); }, rounds) / 2;
    fused_ms += best_ms([&] { fused().backward(); }, rounds) / 2;
  }
  const int64_t chunk = std::min(N, std::max(D, (int64_t{1} << 24) / V));
  std::printf("projection + cross-entropy fwd+bwd %s %s (%ld x %ld -> %ld): logits then loss %.2f ms, error %.2g, "
              "logits + gradient %.0f MB; %ld-row chunks %.2f ms, error %.2g, chunk + dw %.0f MB: chunks %.2fx\n",
              model, c10::toString(dtype), N, D, V, separate_ms, separate_err,
              2.0 * N * V * h.element_size() / 1e6, chunk, fused_ms, fused_err,
              (chunk * V * h.element_size() + V * D * (chunk < N ? 4.0 : h.element_size())) / 1e6, separate_ms / fused_ms);
}

// The gradient norm of the mid model's parameters (158M fp32 or bf16, not clipped): the former form, float64
// norms of 1M-element slices then a multiply by the coefficient, vs one float64 pass (no multiply by 1).
void grad_norm(torch::ScalarType dtype, int rounds) {
  torch::manual_seed(5);
  std::vector<torch::Tensor> params;
  double exact = 0;
  for (const auto& shape : mid_model_shapes()) {
    params.push_back(torch::zeros(shape).requires_grad_(true));
    params.back().mutable_grad() = (torch::randn(shape) * 1e-3).to(dtype);
    exact += params.back().grad().to(torch::kFloat64).pow(2).sum().item<double>();
  }
  exact = std::sqrt(exact);
  double slices_norm = 0, ours_norm = 0;
  auto slices = [&] {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> norms, grads;
    for (const auto& p : params) {
      grads.push_back(p.grad());
      const auto flat = p.grad().reshape({-1});
      for (int64_t i = 0; i < flat.numel(); i += 1 << 20)
        norms.push_back(at::linalg_vector_norm(flat.narrow(0, i, std::min<int64_t>(1 << 20, flat.numel() - i)), 2,
                                               std::nullopt, false, torch::kFloat64));
    }
    slices_norm = std::sqrt(torch::stack(norms).pow(2).sum().item<double>());
    at::_foreach_mul_(grads, std::min(1.0, 1e9 / (slices_norm + 1e-6)));
  };
  auto ours = [&] { ours_norm = titan::grad_norm(params, std::vector<bool>(params.size(), true)); };
  double slices_ms = 0, ours_ms = 0;
  for (int r = 0; r < 2; ++r) {
    slices_ms += best_ms(slices, rounds) / 2;
    ours_ms += best_ms(ours, rounds) / 2;
  }
  std::printf(
      "gradient norm, mid model (158M %s): 1M slices %.1f ms, relative error %.2g; one float64 pass %.1f ms, "
      "relative error %.2g: one pass %.2fx\n",
      c10::toString(dtype), slices_ms, std::abs(slices_norm - exact) / exact, ours_ms,
      std::abs(ours_norm - exact) / exact, slices_ms / ours_ms);
}

void bf16_gemm() {
  const auto probe = titan::probe_low_precision_gemm(torch::kBFloat16, torch::kCPU);
  std::printf("bf16 GEMM 512^3: native %.3g FLOP/s (largest error %.3g), fp32 accumulation %.3g FLOP/s (largest "
              "error %.3g): fp32 accumulation %.2fx; the start-up probe picks %s\n",
              probe.native_flops, probe.native_error, probe.fp32_flops, probe.fp32_error,
              probe.fp32_flops / probe.native_flops, probe.choice == titan::LowPrecisionGemm::kFp32 ? "fp32 accumulation" : "native");
}

void data(const std::string& tokenizer_dir, const std::string& text, int rounds) {
  auto tokenizer = titan::load_tokenizer(tokenizer_dir);
  auto stream = std::make_unique<titan::TokenStream>(titan::open_document_source(text, tokenizer.get()), 257);
  titan::DataLoader loader(std::move(stream), 8, 256, 0, 1, tokenizer->vocab_size());
  const double ms = best_ms([&] { for (int i = 0; i < 10; ++i) loader.next(); }, rounds) / 10;
  std::printf("data: one debug-model batch (8 x 256 tokens, tokenized from %s): %.2f ms\n", text.c_str(), ms);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [ROUNDS] [ROW]\n", argv[0]);
    return 2;
  }
  const int rounds = argc > 3 ? std::stoi(argv[3]) : 5;
  const std::string only = argc > 4 ? argv[4] : "";  // one row, by its function's name
  const std::vector<std::string> rows = {"attention",
                                         "attention_forward",
                                         "attention_backward",
                                         "adamw",
                                         "clip",
                                         "adam_step",
                                         "rms_norm",
                                         "rope",
                                         "swiglu",
                                         "cross_entropy",
                                         "linear_cross_entropy",
                                         "grad_norm",
                                         "bf16_gemm",
                                         "data"};
  if (!only.empty() && std::find(rows.begin(), rows.end(), only) == rows.end()) {
    std::fprintf(stderr, "kernel_bench: no row '%s' (valid: %s)\n", only.c_str(), c10::Join(", ", rows).c_str());
    return 2;
  }
  auto row = [&](const std::string& name) { return only.empty() || name == only; };
  std::printf("%d intra-op threads, best of %d runs each, alternated twice\n", torch::get_num_threads(), rounds);
  // bf16 matmuls of our kernels take the path the trainer's start-up probe would choose here.
  titan::set_low_precision_gemm(titan::probe_low_precision_gemm(torch::kBFloat16, torch::kCPU).choice);
  if (row("attention"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      attention("debug", 8, 16, 1, 256, 16, dtype, rounds);
      attention("mid", 1, 8, 2, 1024, 64, dtype, rounds);
    }
  // The layers both attention rows time: debug, long and mid; a full block of context parallelism's ring (cp 2 at
  // seq 1024, rank 1 against rank 0); one head of the mid layer, fewer (batch, kv head)s than threads, where the
  // model's forward is libtorch's and its backward ours (SDPA's backward splits no finer).
  struct AttentionLayer {
    const char* model;
    int64_t B, H, T, hd;
    bool causal;
  };
  const AttentionLayer attention_layers[] = {{"debug", 8, 16, 256, 16, true},
                                             {"long", 4, 16, 2048, 16, true},
                                             {"mid", 1, 16, 1024, 64, true},
                                             {"mid", 1, 16, 512, 64, false},
                                             {"one head of the mid", 1, 1, 1024, 64, true}};
  for (const auto dtype : {torch::kBFloat16, torch::kFloat32})
    for (const auto& l : attention_layers) {
      if (row("attention_forward")) attention_forward(l.model, l.B, l.H, l.T, l.hd, l.causal, dtype, rounds);
      if (row("attention_backward")) attention_backward(l.model, l.B, l.H, l.T, l.hd, l.causal, dtype, rounds);
    }
  if (row("adamw")) adamw(rounds);
  if (row("clip"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) clip(dtype, rounds);
  if (row("adam_step"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) adam_step(dtype, rounds);
  if (row("rms_norm"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) rms_norm(dtype, rounds);
  if (row("rope"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      rope("debug", 8, 256, 16, 16, dtype, rounds);
      rope("mid", 1, 1024, 16, 64, dtype, rounds);
    }
  if (row("swiglu"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      swiglu("debug", 8 * 256, 768, dtype, rounds);
      swiglu("mid", 1024, 2816, dtype, rounds);
    }
  if (row("cross_entropy"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      cross_entropy("debug", 8 * 256, 2048, dtype, rounds);
      cross_entropy("mid", 1024, 32000, dtype, rounds);
    }
  if (row("linear_cross_entropy"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      linear_cross_entropy("debug", 8 * 256, 256, 2048, dtype, rounds);
      linear_cross_entropy("mid", 1024, 1024, 32000, dtype, rounds);
      linear_cross_entropy("many tokens", 4096, 256, 32000, dtype, rounds);  // N >> D: where chunks save memory
    }
  if (row("grad_norm"))
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) grad_norm(dtype, rounds);
  if (row("bf16_gemm")) bf16_gemm();
  if (row("data")) data(argv[1], argv[2], rounds);
}
