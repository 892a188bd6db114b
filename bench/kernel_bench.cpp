// The performance levers of issue #6 one by one, each against the form it replaced, alternating
// in one run: causal attention by query blocks vs the full T x T matrix (forward + backward), the
// one-pass AdamW vs torch.optim's op-by-op form, bf16 GEMMs with fp32 accumulation vs libtorch's
// bf16 kernel, and the data loader's time per batch. Run through bench/kernel_bench.sh.
#include <chrono>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>

#include "models/common/causal_attention.h"
#include "models/common/matmul.h"
#include "trainer/dataloader.h"
#include "trainer/document_source.h"
#include "trainer/optimizer.h"
#include "trainer/tokenizer.h"

namespace {

using titan::AdamW;
using titan::JobConfig;

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

// What the model computed before: softmax over the whole masked T x T matrix.
torch::Tensor full_matrix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t B = q.size(0), KV = q.size(1), rep = q.size(2), T = q.size(3), hd = q.size(4);
  auto scores = titan::batched_matmul(q.reshape({B, KV, rep * T, hd}), k).mul_(1.0 / std::sqrt(double(hd)));
  auto masked = torch::ones({T, T}, torch::kBool).triu(1);
  scores = scores.view({B, KV, rep, T, T}).masked_fill(masked, -std::numeric_limits<double>::infinity());
  auto probs = torch::softmax(scores, -1).view({B, KV, rep * T, T});
  return titan::batched_matmul(probs, v).view({B, KV, rep, T, hd});
}

void attention(const char* model, int64_t B, int64_t KV, int64_t rep, int64_t T, int64_t hd, int rounds) {
  auto q = torch::randn({B, KV, rep, T, hd}).requires_grad_(true);
  auto k = torch::randn({B, KV, hd, T}).requires_grad_(true);
  auto v = torch::randn({B, KV, T, hd}).requires_grad_(true);
  const double full = best_ms([&] { full_matrix_attention(q, k, v).sum().backward(); }, rounds);
  const double blocked = best_ms([&] { titan::causal_attention(q, k, v).sum().backward(); }, rounds);
  std::printf(
      "attention fwd+bwd, %s layer (B %ld, %ld kv x %ld heads, T %ld, hd %ld): full matrix %.1f ms, "
      "%ld query blocks %.1f ms: %.2fx\n",
      model, B, KV, rep, T, hd, full, titan::attention_query_blocks(T), blocked, full / blocked);
}

void adamw(int rounds) {
  // The mid model's parameter shapes (158M fp32 parameters).
  std::vector<std::vector<int64_t>> shapes = {{32000, 1024}, {32000, 1024}, {1024}};
  for (int l = 0; l < 8; ++l)
    for (const auto& s : std::vector<std::vector<int64_t>>{{1024, 1024},
                                                           {512, 1024},
                                                           {512, 1024},
                                                           {1024, 1024},
                                                           {2816, 1024},
                                                           {1024, 2816},
                                                           {2816, 1024},
                                                           {1024},
                                                           {1024}})
      shapes.push_back(s);
  std::vector<std::pair<std::string, torch::Tensor>> params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto p = torch::randn(shapes[i]).requires_grad_(true);
    p.mutable_grad() = torch::randn(shapes[i]);
    params.emplace_back("p" + std::to_string(i), p);
  }
  JobConfig::Optimizer c;
  AdamW fused(params, c);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> state;
  for (auto& [n, p] : params) state.emplace_back(torch::zeros_like(p), torch::zeros_like(p));
  int step = 0;
  auto op_by_op = [&] {  // torch.optim's single-tensor AdamW
    torch::NoGradGuard no_grad;
    ++step;
    const double lr = 1e-4, bc1 = 1 - std::pow(c.beta1, step), bc2 = 1 - std::pow(c.beta2, step);
    for (size_t i = 0; i < params.size(); ++i) {
      auto& p = params[i].second;
      auto& [m, v] = state[i];
      p.mul_(1 - lr * c.weight_decay);
      m.mul_(c.beta1).add_(p.grad(), 1 - c.beta1);
      v.mul_(c.beta2).addcmul_(p.grad(), p.grad(), 1 - c.beta2);
      p.addcdiv_(m, (v.sqrt() / std::sqrt(bc2)).add_(c.eps), -lr / bc1);
    }
  };
  const double ops = best_ms(op_by_op, rounds);
  const double one_pass = best_ms([&] { fused.step(1e-4); }, rounds);
  std::printf("AdamW step, mid model (158M fp32 parameters): op-by-op %.0f ms, one pass %.0f ms: %.2fx\n", ops,
              one_pass, ops / one_pass);
}

void bf16_gemm() {
  const auto probe = titan::probe_low_precision_gemm(torch::kBFloat16, torch::kCPU);
  std::printf(
      "bf16 GEMM 512^3: native %.3g FLOP/s (largest error %.3g), fp32 accumulation %.3g FLOP/s (largest "
      "error %.3g): %.1fx\n",
      probe.native_flops, probe.native_error, probe.fp32_flops, probe.fp32_error,
      probe.fp32_flops / probe.native_flops);
}

void data(const std::string& tokenizer_dir, const std::string& text, int rounds) {
  titan::Tokenizer tokenizer(tokenizer_dir);
  auto stream = std::make_unique<titan::TokenStream>(titan::open_document_source(text, &tokenizer), 257);
  titan::DataLoader loader(std::move(stream), 8, 256, 0, 1, tokenizer.vocab_size());
  const double ms = best_ms(
                        [&] {
                          for (int i = 0; i < 10; ++i) loader.next();
                        },
                        rounds) /
                    10;
  std::printf("data: one debug-model batch (8 x 256 tokens, tokenized from %s): %.2f ms\n", text.c_str(), ms);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [ROUNDS]\n", argv[0]);
    return 2;
  }
  const int rounds = argc > 3 ? std::stoi(argv[3]) : 5;
  std::printf("%d intra-op threads, best of %d runs each\n", torch::get_num_threads(), rounds);
  attention("debug", 8, 16, 1, 256, 16, rounds);
  attention("mid", 1, 8, 2, 1024, 64, rounds);
  adamw(rounds);
  bf16_gemm();
  data(argv[1], argv[2], rounds);
}
