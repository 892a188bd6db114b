// Throughput, FLOPs and memory figures for the training log line.
#pragma once

#include <cstdint>
#include <string>

#include "models/common/torch_api.h"
#include "models/llama3/model_args.h"

namespace titan {

// 6 * (params - embedding params) + 12 * n_layers * n_heads * head_dim * seq_len (TorchTitan's).
double flops_per_token(const llama3::ModelArgs& args, int64_t num_params, int64_t seq_len);

// Best FLOP/s of a short square GEMM probe in `dtype` on `device`.
double measure_peak_flops(torch::ScalarType dtype, const torch::Device& device);

struct StepMetrics {
  int64_t step;
  double loss, grad_norm, lr, tps, tflops, mfu_percent;
  double memory_gib, memory_percent;
};

// "step:  1  loss:  7.62345  grad_norm:  1.2345  memory:  0.42GiB(1.31%)  tps: 12,345  tflops: 0.12  mfu: 4.56%"
std::string format_step_line(const StepMetrics& m, bool disable_color_printing);

// "validate step:  2  loss:  7.6234  memory:  0.42GiB(1.31%)  tps: 12,345" (TorchTitan's log_validation)
std::string format_validation_line(int64_t step, double loss, double memory_gib, double memory_percent, double tps,
                                   bool disable_color_printing);

// {"step":1,"loss":7.623451232910156,"grad_norm":...,"lr":...,"tps":...,"tflops":...,"mfu":...,"memory_gib":...,
// "memory_pct":...}: a line of metrics.jsonl, every number exact (mfu and memory_pct in percent).
std::string format_json_line(const StepMetrics& m);

// {"step":2,"validation_loss":7.623451232910156,"validation_tps":...,"validation_memory_gib":...,
// "validation_memory_pct":...}: a validation's line of metrics.jsonl, its keys apart from training's.
std::string format_validation_json_line(int64_t step, double loss, double tps, double memory_gib, double memory_percent);

// 12345678 -> "12,345,678"
std::string with_commas(int64_t v);

}  // namespace titan
