// The model's attention core against the full-matrix formula in float64, with grouped query heads
// (query head h reads kv head h / rep, as repeat_interleave), a length of no round size, and gradients;
// in bf16 and fp32 on 128-row blocks (our CPU kernels where the CPU has them) against float64 and, in
// bf16, against SDPA's own.
#include <gtest/gtest.h>

#include <limits>

#include "models/common/causal_attention.h"
#include "models/common/flash_attention_cpu.h"
#include "models/common/torch_api.h"
#include "tests/unit/models/common/flash_isa_cases.h"

namespace titan {
namespace {

// softmax(q k^T / sqrt(hd) + causal mask) v over the whole T x T matrix, kv heads repeated.
torch::Tensor full_matrix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t rep = q.size(1) / k.size(1), T = q.size(2), hd = q.size(3);
  auto kk = k.repeat_interleave(rep, 1), vv = v.repeat_interleave(rep, 1);                   // (B, H, T, hd)
  auto scores = torch::matmul(q, kk.transpose(2, 3)) / std::sqrt(static_cast<double>(hd));  // (B, H, T, T)
  scores = scores.masked_fill(torch::ones({T, T}, torch::kBool).triu(1), -std::numeric_limits<double>::infinity());
  return torch::matmul(torch::softmax(scores, -1), vv);  // (B, H, T, hd)
}

TEST(CausalAttention, EqualsTheFullMatrixInFloat64WithGroupedHeads) {
  torch::manual_seed(5);
  const int64_t B = 2, KV = 2, rep = 3, T = 202, hd = 8;
  auto q = torch::randn({B, KV * rep, T, hd}).requires_grad_(true);
  auto k = torch::randn({B, KV, T, hd}).requires_grad_(true);
  auto v = torch::randn({B, KV, T, hd}).requires_grad_(true);
  auto g = torch::randn({B, KV * rep, T, hd});
  auto out = causal_attention(q, k, v);
  out.backward(g);

  auto q64 = q.detach().to(torch::kFloat64).requires_grad_(true);
  auto k64 = k.detach().to(torch::kFloat64).requires_grad_(true);
  auto v64 = v.detach().to(torch::kFloat64).requires_grad_(true);
  auto expected = full_matrix_attention(q64, k64, v64);
  expected.backward(g.to(torch::kFloat64));
  auto max_diff = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kFloat64) - b).abs().max().item<double>();
  };
  EXPECT_LT(max_diff(out, expected), 1e-5);
  EXPECT_LT(max_diff(q.grad(), q64.grad()), 1e-5);
  EXPECT_LT(max_diff(k.grad(), k64.grad()), 1e-5);
  EXPECT_LT(max_diff(v.grad(), v64.grad()), 1e-5);
  // The first query sees only the first key: its output is v's first row, kv head h / rep.
  EXPECT_TRUE(torch::allclose(out.select(2, 0), v.select(2, 0).repeat_interleave(rep, 1)));
}

// bf16 and fp32, the model's layout (q, k, v and the gradient transposed (B, T, heads, hd) views) and
// contiguous (B, heads, T, hd) tensors, several 128-row blocks,
// grouped heads, head sizes 16, 64 and 128 (two packed bf16 column blocks): output and gradients
// against float64 of the same inputs within 2% of their largest and at most 1.5x the error of SDPA's
// own (bf16), or within 2e-6 of their largest (fp32). Where the CPU has neither AVX-512 nor AVX2,
// or T is no multiple of 128, the model's attention is SDPA's: the same bounds hold. On AVX-512 CPUs
// again on AVX2's path.
class CausalAttentionKernels : public FlashIsaCases {};
INSTANTIATE_TEST_SUITE_P(Isa, CausalAttentionKernels, ::testing::ValuesIn(kFlashIsas), flash_isa_name);

TEST_P(CausalAttentionKernels, OutputAndGradientsMatchFloat64InBf16AndFp32) {
  torch::manual_seed(6);
  struct Shape {
    int64_t B, KV, rep, T, hd;
    bool model_layout;
  };
  // (B, heads, T, hd): a transposed (B, T, heads, hd) tensor as the model hands them over, or contiguous.
  auto randn = [](int64_t B, int64_t heads, int64_t T, int64_t hd, bool model_layout) {
    return model_layout ? torch::randn({B, T, heads, hd}).transpose(1, 2) : torch::randn({B, heads, T, hd});
  };
  for (const auto dtype : {torch::kBFloat16, torch::kFloat32})
    for (const Shape sh : {Shape{2, 2, 3, 256, 16, true}, Shape{1, 2, 2, 384, 64, false},
                           Shape{1, 1, 1, 128, 128, true}, Shape{1, 2, 2, 200, 64, true}}) {
      const int64_t H = sh.KV * sh.rep;
      const std::string where = c10::str(dtype, " B ", sh.B, " KV ", sh.KV, " rep ", sh.rep, " T ", sh.T, " hd ", sh.hd,
                                         sh.model_layout ? " model layout" : " contiguous");
      const auto q0 = randn(sh.B, H, sh.T, sh.hd, sh.model_layout).to(dtype);  // (B, H, T, hd)
      const auto k0 = randn(sh.B, sh.KV, sh.T, sh.hd, sh.model_layout).to(dtype);
      const auto v0 = randn(sh.B, sh.KV, sh.T, sh.hd, sh.model_layout).to(dtype);
      const auto g = randn(sh.B, H, sh.T, sh.hd, sh.model_layout).to(dtype);
      auto q64 = q0.to(torch::kFloat64).requires_grad_(true), k64 = k0.to(torch::kFloat64).requires_grad_(true),
           v64 = v0.to(torch::kFloat64).requires_grad_(true);
      const auto exact_out = full_matrix_attention(q64, k64, v64);
      exact_out.backward(g.to(torch::kFloat64));
      auto grads = [&](bool ours) {
        auto q = q0.detach().requires_grad_(true), k = k0.detach().requires_grad_(true),
             v = v0.detach().requires_grad_(true);
        auto out = ours ? causal_attention(q, k, v)
                        : at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, std::nullopt, sh.rep > 1);
        out.backward(g);
        return std::vector<torch::Tensor>{q.grad(), k.grad(), v.grad(), out.detach()};
      };
      const auto ours = grads(true), sdpa = grads(false);
      const std::vector<torch::Tensor> exact = {q64.grad(), k64.grad(), v64.grad(), exact_out.detach()};
      for (size_t n = 0; n < exact.size(); ++n) {  // dq, dk, dv, the output
        const double scale = exact[n].abs().max().item<double>();
        const double ours_err = (ours[n].to(torch::kFloat64) - exact[n]).abs().max().item<double>();
        const double sdpa_err = (sdpa[n].to(torch::kFloat64) - exact[n]).abs().max().item<double>();
        EXPECT_EQ(ours[n].scalar_type(), dtype) << where;
        if (dtype == torch::kBFloat16) {
          EXPECT_LT(ours_err, 0.02 * scale) << where << " tensor " << n;
          EXPECT_LE(ours_err, 1.5 * sdpa_err) << where << " tensor " << n;
        } else {  // both at fp32's rounding (measured: ours 3e-7 to 7e-7 of the largest, SDPA's 2e-7 to 6e-7)
          EXPECT_LT(ours_err, 2e-6 * scale) << where << " tensor " << n;
        }
      }
    }
}

}  // namespace
}  // namespace titan
