// Our CPU flash kernels: which shapes and dtypes they take. The forward, causal and on full blocks whose query and key
// lengths differ, grouped heads: the output against float64's within 2e-6 of the largest in fp32, within 2% and at most
// 1.5x the error of SDPA's own in bf16; the log-sum-exp within 2e-6 absolute; every row of a diagonal block (each sees
// a different number of keys). The backward on full blocks
// of other lengths, as context parallelism's ring hands them over (the causal case runs through the model's attention
// in test_causal_attention.cpp): gradients against float64 of the same inputs within 2% of their largest and at
// most 1.5x the error of SDPA's own backward (its kv gradients summed over the query heads in float64) in bf16, within
// 2e-6 of their largest in fp32; head sizes 16, 64 and 80 (bf16 packed as 64 + 16 columns); inputs in the model's
// transposed layout give gradients in that layout (no copy after). Each dtype is left out
// where the CPU lacks AVX-512 and AVX2 (bf16 runs through fp32 where it has no AMX); where it has AVX-512, both
// run again on AVX2's path (8 lanes, bf16 through fp32). With fewer (batch, kv head)s than threads the model's
// forward is libtorch's.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <limits>

#include "models/common/flash_attention_cpu.h"
#include "models/common/torch_api.h"
#include "tests/unit/models/common/flash_isa_cases.h"

namespace titan {
namespace {

// What the kernels take, and what falls back to SDPA: shapes they would read out of bounds
// (another batch size), partial blocks, head sizes, mixed dtypes.
TEST(FlashAttentionCpu, TakesWholeBlocksOfOneBatchOnly) {
  const auto q = torch::randn({2, 4, 256, 16}), k = torch::randn({2, 2, 256, 16});
  if (!flash_supported(q, k, /*causal=*/true)) GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2";
  EXPECT_TRUE(flash_supported(q, k.narrow(2, 0, 128), /*causal=*/false));
  EXPECT_FALSE(flash_supported(q, k.narrow(2, 0, 128), /*causal=*/true));  // causal needs Tq == Tk
  EXPECT_FALSE(flash_supported(q, k.narrow(0, 0, 1), /*causal=*/true));
  EXPECT_FALSE(flash_supported(q.narrow(2, 0, 200), k.narrow(2, 0, 200), /*causal=*/true));
  EXPECT_FALSE(flash_supported(q.narrow(3, 0, 8), k.narrow(3, 0, 8), /*causal=*/true));
  EXPECT_FALSE(flash_supported(q.narrow(1, 0, 3), k, /*causal=*/true));  // 3 query heads over 2 kv heads
  EXPECT_FALSE(flash_supported(q, k.to(torch::kBFloat16), /*causal=*/true));
}

// cpu_flash_forward takes ours only with a (batch, kv head) for every thread, libtorch's otherwise.
TEST(FlashForward, FewerBatchKvHeadsThanThreadsTakeLibtorchs) {
  const auto q = torch::randn({1, 4, 128, 16}), k = torch::randn({1, 2, 128, 16}), v = torch::randn({1, 2, 128, 16});
  if (!flash_supported(q, k, /*causal=*/true)) GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2";
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  const auto one = cpu_flash_forward(q.narrow(1, 0, 2), k.narrow(1, 0, 1), v.narrow(1, 0, 1), /*causal=*/true);
  const auto sdpa = at::_scaled_dot_product_flash_attention_for_cpu(q.narrow(1, 0, 2), k.narrow(1, 0, 1),
                                                                    v.narrow(1, 0, 1), 0.0, /*is_causal=*/true);
  EXPECT_TRUE(torch::equal(one.first, std::get<0>(sdpa)) && torch::equal(one.second, std::get<1>(sdpa)));
  const auto two = cpu_flash_forward(q, k, v, /*causal=*/true), ours = flash_forward(q, k, v, /*causal=*/true);
  EXPECT_TRUE(torch::equal(two.first, ours.first) && torch::equal(two.second, ours.second));
  at::set_num_threads(threads);
}

class FlashKernels : public FlashIsaCases {};
INSTANTIATE_TEST_SUITE_P(Isa, FlashKernels, ::testing::ValuesIn(kFlashIsas), flash_isa_name);

TEST_P(FlashKernels, ForwardMatchesFloat64CausalAndOnFullBlocksOfOtherLengthsInBf16AndFp32) {
  torch::manual_seed(8);
  struct Shape {
    int64_t B, KV, rep, Tq, Tk, hd;
    bool causal;
  };
  int ran = 0;
  for (const auto dtype : {torch::kBFloat16, torch::kFloat32})
    for (const Shape sh : {Shape{2, 2, 3, 256, 256, 16, true}, Shape{1, 1, 2, 384, 384, 64, true},
                           Shape{1, 2, 2, 256, 128, 16, false}, Shape{2, 1, 3, 128, 384, 80, false}}) {
      const int64_t H = sh.KV * sh.rep;
      const std::string where = c10::str(dtype, " B ", sh.B, " KV ", sh.KV, " rep ", sh.rep, " Tq ", sh.Tq, " Tk ",
                                         sh.Tk, " hd ", sh.hd, sh.causal ? " causal" : " full");
      const auto q = torch::randn({sh.B, sh.Tq, H, sh.hd}).transpose(1, 2).to(dtype);  // (B, H, Tq, hd), the model's
      const auto k = torch::randn({sh.B, sh.KV, sh.Tk, sh.hd}).to(dtype);              // (B, KV, Tk, hd)
      const auto v = torch::randn({sh.B, sh.Tk, sh.KV, sh.hd}).transpose(1, 2).to(dtype);  // the model's layout
      if (!flash_supported(q, k, sh.causal)) continue;  // neither AVX-512 nor AVX2 here
      ++ran;
      const auto ke = k.repeat_interleave(sh.rep, 1), ve = v.repeat_interleave(sh.rep, 1);  // (B, H, Tk, hd)
      auto scores = torch::matmul(q.to(torch::kFloat64), ke.to(torch::kFloat64).transpose(2, 3)) /
                    std::sqrt(static_cast<double>(sh.hd));  // (B, H, Tq, Tk)
      if (sh.causal)
        scores.masked_fill_(torch::ones({sh.Tq, sh.Tk}, torch::kBool).triu(1),
                            -std::numeric_limits<double>::infinity());
      const auto exact = torch::matmul(torch::softmax(scores, -1), ve.to(torch::kFloat64));
      const auto exact_lse = torch::logsumexp(scores, -1);  // (B, H, Tq)

      const auto [out, lse] = flash_forward(q, k, v, sh.causal);
      ASSERT_EQ(out.sizes(), exact.sizes()) << where;
      ASSERT_EQ(lse.sizes(), exact_lse.sizes()) << where;
      EXPECT_EQ(out.scalar_type(), dtype) << where;
      EXPECT_EQ(lse.scalar_type(), torch::kFloat32) << where;
      const double scale = exact.abs().max().item<double>();
      const double err = (out.to(torch::kFloat64) - exact).abs().max().item<double>();
      if (dtype == torch::kBFloat16) {
        const auto sdpa = std::get<0>(at::_scaled_dot_product_flash_attention_for_cpu(q, ke, ve, 0.0, sh.causal));
        EXPECT_LT(err, 0.02 * scale) << where;
        EXPECT_LE(err, 1.5 * (sdpa.to(torch::kFloat64) - exact).abs().max().item<double>()) << where;
      } else {
        EXPECT_LT(err, 2e-6 * scale) << where;
      }
      EXPECT_LT((lse.to(torch::kFloat64) - exact_lse).abs().max().item<double>(), 2e-6) << where;
    }
  if (ran == 0) GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2";
}

TEST_P(FlashKernels, BackwardOnFullBlocksOfOtherLengthsMatchesFloat64InBf16AndFp32) {
  torch::manual_seed(7);
  struct Shape {
    int64_t B, KV, rep, Tq, Tk, hd;
    bool model_layout;
  };
  // (B, heads, T, hd): a transposed (B, T, heads, hd) tensor as the model hands them over, or contiguous.
  auto randn = [](int64_t B, int64_t heads, int64_t T, int64_t hd, bool model_layout) {
    return model_layout ? torch::randn({B, T, heads, hd}).transpose(1, 2) : torch::randn({B, heads, T, hd});
  };
  int ran = 0;
  for (const auto dtype : {torch::kBFloat16, torch::kFloat32})
    for (const Shape sh : {Shape{1, 2, 2, 256, 128, 16, true}, Shape{2, 1, 3, 128, 384, 64, false},
                           Shape{1, 1, 2, 128, 256, 80, true}}) {
      const int64_t H = sh.KV * sh.rep;
      const std::string where = c10::str(dtype, " B ", sh.B, " KV ", sh.KV, " rep ", sh.rep, " Tq ", sh.Tq, " Tk ",
                                         sh.Tk, " hd ", sh.hd, sh.model_layout ? " model layout" : " contiguous");
      const auto q = randn(sh.B, H, sh.Tq, sh.hd, sh.model_layout).to(dtype);      // (B, H, Tq, hd)
      const auto k = randn(sh.B, sh.KV, sh.Tk, sh.hd, sh.model_layout).to(dtype);  // (B, KV, Tk, hd)
      const auto v = randn(sh.B, sh.KV, sh.Tk, sh.hd, sh.model_layout).to(dtype);
      const auto g = randn(sh.B, H, sh.Tq, sh.hd, sh.model_layout).to(dtype);
      if (!flash_supported(q, k, /*causal=*/false)) continue;  // neither AVX-512 nor AVX2 here
      ++ran;
      const auto ke = k.repeat_interleave(sh.rep, 1), ve = v.repeat_interleave(sh.rep, 1);  // (B, H, Tk, hd)
      const auto [out, lse] = at::_scaled_dot_product_flash_attention_for_cpu(q, ke, ve, 0.0, /*is_causal=*/false);

      auto q64 = q.to(torch::kFloat64).requires_grad_(true), k64 = k.to(torch::kFloat64).requires_grad_(true),
           v64 = v.to(torch::kFloat64).requires_grad_(true);
      const auto scores = torch::matmul(q64, k64.repeat_interleave(sh.rep, 1).transpose(2, 3)) /
                          std::sqrt(static_cast<double>(sh.hd));  // (B, H, Tq, Tk)
      torch::matmul(torch::softmax(scores, -1), v64.repeat_interleave(sh.rep, 1)).backward(g.to(torch::kFloat64));

      const auto [dq, dk, dv] = flash_backward(g, q, k, v, out, lse, /*causal=*/false);
      const auto sdpa = at::_scaled_dot_product_flash_attention_for_cpu_backward(g, q, ke, ve, out, lse, 0.0, false);
      auto fold = [&](const torch::Tensor& d) {  // (B, H, Tk, hd) -> (B, KV, Tk, hd)
        return d.to(torch::kFloat64).view({sh.B, sh.KV, sh.rep, sh.Tk, sh.hd}).sum(2);
      };
      const std::vector<torch::Tensor> ours = {dq, dk, dv}, inputs = {q, k, v},
                                       exact = {q64.grad(), k64.grad(), v64.grad()},
                                       theirs = {std::get<0>(sdpa), fold(std::get<1>(sdpa)), fold(std::get<2>(sdpa))};
      for (size_t n = 0; n < 3; ++n) {
        const double scale = exact[n].abs().max().item<double>();
        const double ours_err = (ours[n].to(torch::kFloat64) - exact[n]).abs().max().item<double>();
        const double sdpa_err = (theirs[n].to(torch::kFloat64) - exact[n]).abs().max().item<double>();
        EXPECT_EQ(ours[n].sizes(), exact[n].sizes()) << where << " gradient " << n;
        EXPECT_EQ(ours[n].strides(), inputs[n].strides()) << where << " gradient " << n;
        EXPECT_EQ(ours[n].scalar_type(), dtype) << where;
        if (dtype == torch::kBFloat16) {
          EXPECT_LT(ours_err, 0.02 * scale) << where << " gradient " << n;
          EXPECT_LE(ours_err, 1.5 * sdpa_err) << where << " gradient " << n;
        } else {
          EXPECT_LT(ours_err, 2e-6 * scale) << where << " gradient " << n;
        }
      }
    }
  if (ran == 0) GTEST_SKIP() << "this CPU has neither AVX-512 nor AVX2";
}

}  // namespace
}  // namespace titan
