#include "trainer/metrics.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "models/common/matmul.h"
#include "parallel/logging.h"

namespace titan {

double flops_per_token(const llama3::ModelArgs& args, int64_t num_params, int64_t seq_len) {
  const double embedding = static_cast<double>(args.vocab_size) * static_cast<double>(args.dim);
  double dense = static_cast<double>(num_params) - embedding;
  if (args.moe) {  // only top_k of the routed experts run per token (TorchTitan's active parameters)
    int64_t moe_layers = 0;
    for (int64_t l = 0; l < args.n_layers; ++l) moe_layers += args.moe_layer(l);
    const int64_t experts = moe_layers * 3 * args.moe->num_experts * args.moe_hidden_dim() * args.dim;
    dense -= static_cast<double>(experts - experts * args.moe->top_k / args.moe->num_experts);
  }
  const double attention = 12.0 * args.n_layers * args.n_heads * args.head_dim() * static_cast<double>(seq_len);
  return 6.0 * dense + attention;
}

double measure_peak_flops(torch::ScalarType dtype, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  const int64_t n = 1024;
  auto a = torch::randn({n, n}, torch::TensorOptions().dtype(torch::kFloat32).device(device)).to(dtype);
  auto b = torch::randn({n, n}, torch::TensorOptions().dtype(torch::kFloat32).device(device)).to(dtype);
  auto c = apply_linear(a, b);  // warm-up
  // Best of repeated runs over ~0.5 s: a shared machine's neighbours only ever slow a run down.
  double best = 0, spent = 0;
  for (int rep = 0; rep < 5 || (spent < 0.5 && rep < 100); ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    c = apply_linear(a, b);  // the path the model's matmuls take (see models/common/matmul.h)
    c.sum().item<double>();  // waits for the device
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    spent += s;
    best = std::max(best, 2.0 * n * n * n / s);
  }
  return best;
}

std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string format_step_line(const StepMetrics& m, bool disable_color_printing) {
  const Colors c = colors(disable_color_printing);
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "%sstep: %2lld  %sloss: %8.5f  %sgrad_norm: %7.4f  %smemory: %5.2fGiB(%.2f%%)  %stps: %s  "
                "%stflops: %.2f  %smfu: %.2f%%%s",
                c.red.c_str(), static_cast<long long>(m.step), c.green.c_str(), m.loss, c.yellow.c_str(), m.grad_norm,
                c.turquoise.c_str(), m.memory_gib, m.memory_percent, c.blue.c_str(),
                with_commas(static_cast<int64_t>(std::llround(m.tps))).c_str(), c.cyan.c_str(), m.tflops,
                c.green.c_str(), m.mfu_percent, c.reset.c_str());
  return buf;
}

std::string format_validation_line(int64_t step, double loss, double memory_gib, double memory_percent, double tps,
                                   bool disable_color_printing) {
  const Colors c = colors(disable_color_printing);
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%svalidate step: %2lld  %sloss: %7.4f  %smemory: %5.2fGiB(%.2f%%)  %stps: %s%s",
                c.yellow.c_str(), static_cast<long long>(step), c.green.c_str(), loss, c.turquoise.c_str(), memory_gib,
                memory_percent, c.blue.c_str(), with_commas(static_cast<int64_t>(std::llround(tps))).c_str(), c.reset.c_str());
  return buf;
}

std::string format_json_line(const StepMetrics& m) {
  // Keys in the log line's order; a non-finite value is written as null.
  const nlohmann::ordered_json line = {{"step", m.step},     {"loss", m.loss},     {"grad_norm", m.grad_norm},
                                       {"lr", m.lr},         {"tps", m.tps},       {"tflops", m.tflops},
                                       {"mfu", m.mfu_percent}, {"memory_gib", m.memory_gib},
                                       {"memory_pct", m.memory_percent}};
  return line.dump();
}

std::string format_validation_json_line(int64_t step, double loss, double tps, double memory_gib, double memory_percent) {
  const nlohmann::ordered_json line = {{"step", step},
                                       {"validation_loss", loss},
                                       {"validation_tps", tps},
                                       {"validation_memory_gib", memory_gib},
                                       {"validation_memory_pct", memory_percent}};
  return line.dump();
}

}  // namespace titan
