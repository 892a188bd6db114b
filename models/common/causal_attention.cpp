#include "models/common/causal_attention.h"

#include "models/common/flash_attention_cpu.h"

namespace titan {
namespace {

// The CPU flash forward (ours, or libtorch's with fewer (batch, kv head)s than threads) and our backward
// (flash_attention_cpu.h).
struct FlashAttention : torch::autograd::Function<FlashAttention> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v) {
    auto [out, lse] = cpu_flash_forward(q, k, v, /*causal=*/true);
    ctx->save_for_backward({q, k, v, out, lse});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto s = ctx->get_saved_variables();
    auto [dq, dk, dv] = flash_backward(grad[0], s[0], s[1], s[2], s[3], s[4], /*causal=*/true);
    return {dq, dk, dv};
  }
};

}  // namespace

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  if (flash_supported(q, k, /*causal=*/true)) return FlashAttention::apply(q, k, v);
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, /*is_causal=*/true,
                                          /*scale=*/std::nullopt, /*enable_gqa=*/q.size(1) != k.size(1));
}

}  // namespace titan
