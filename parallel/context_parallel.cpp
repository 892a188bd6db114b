#include "parallel/context_parallel.h"

#include <cmath>
#include <stdexcept>
#include <utility>

#include "parallel/autograd_collectives.h"

namespace titan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Causal attention of q (B, H, Tq, hd) at positions q_pos (Tq,) over k, v (B, KV, Tk, hd) at
// k_pos (Tk,), in fp32 by the formula: the output (B, H, Tq, hd) and each query's log-sum-exp of
// its scaled scores (B, H, Tq). A query with no key at or before it gets a log-sum-exp ~-1e30
// (finite: no NaN in backward), so a merge gives its output weight 0.
std::pair<torch::Tensor, torch::Tensor> attention_block(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                                         const torch::Tensor& q_pos, const torch::Tensor& k_pos) {
  const int64_t groups = q.size(1) / k.size(1);
  const auto kf = k.to(torch::kFloat32).repeat_interleave(groups, 1);  // (B, H, Tk, hd)
  const auto vf = v.to(torch::kFloat32).repeat_interleave(groups, 1);
  auto scores = torch::matmul(q.to(torch::kFloat32), kf.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1)));
  const auto hidden = q_pos.unsqueeze(1) < k_pos.unsqueeze(0);  // (Tq, Tk): keys after the query
  scores = scores.masked_fill(hidden, -1e30);                    // (B, H, Tq, Tk)
  auto lse = torch::logsumexp(scores, -1);                       // (B, H, Tq)
  auto out = torch::matmul(torch::exp(scores - lse.unsqueeze(-1)), vf);  // (B, H, Tq, hd)
  return {out, lse};
}

// Rank r's tensor goes to rank r + 1 of the group and rank r - 1's arrives (mod n), as one
// all-to-all; backward sends the gradient the other way.
torch::Tensor ring_shift(const torch::Tensor& x, ProcessGroup& group, bool backwards);

struct RingShift : public torch::autograd::Function<RingShift> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group_address, bool backwards) {
    ctx->saved_data["group"] = group_address;
    ctx->saved_data["backwards"] = backwards;
    return ring_shift(x, *reinterpret_cast<ProcessGroup*>(group_address), backwards);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* group = reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    return {ring_shift(grads[0], *group, !ctx->saved_data["backwards"].toBool()), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor ring_shift(const torch::Tensor& x, ProcessGroup& group, bool backwards) {
  const int64_t n = group.size(), r = group.rank();
  const int64_t to = (r + (backwards ? n - 1 : 1)) % n, from = (r + (backwards ? 1 : n - 1)) % n;
  auto in = x.contiguous().view({-1});
  auto out = torch::empty_like(in);
  std::vector<int64_t> in_splits(static_cast<size_t>(n), 0), out_splits(static_cast<size_t>(n), 0);
  in_splits[static_cast<size_t>(to)] = in.numel();
  out_splits[static_cast<size_t>(from)] = in.numel();
  group.all_to_all(out, in, out_splits, in_splits);
  return out.view(x.sizes());
}

}  // namespace

torch::Tensor context_parallel_positions(int64_t seq_len, int64_t cp, int64_t rank, bool head_tail) {
  if (!head_tail) {
    const int64_t c = seq_len / cp;
    return torch::arange(rank * c, (rank + 1) * c, torch::kLong);
  }
  const int64_t c = seq_len / (2 * cp);
  return torch::cat({torch::arange(rank * c, (rank + 1) * c, torch::kLong),
                     torch::arange((2 * cp - 1 - rank) * c, (2 * cp - rank) * c, torch::kLong)});
}

ContextParallel::ContextParallel(ProcessGroup& group, int64_t seq_len, bool head_tail, std::string rotate_method)
    : group_(group), rotate_method_(std::move(rotate_method)) {
  if (rotate_method_ != "allgather" && rotate_method_ != "alltoall")
    throw std::invalid_argument("parallelism.context_parallel_rotate_method '" + rotate_method_ +
                                "' is not valid (valid: allgather, alltoall)");
  for (int64_t r = 0; r < group_.size(); ++r)
    positions_.push_back(context_parallel_positions(seq_len, group_.size(), r, head_tail));
}

torch::Tensor ContextParallel::shard(const torch::Tensor& batch) const {
  return batch.index_select(1, positions_[static_cast<size_t>(group_.rank())].to(batch.device()));
}

torch::Tensor ContextParallel::position_rows(const torch::Tensor& table) {
  return table.index_select(0, positions_[static_cast<size_t>(group_.rank())].to(table.device()));
}

torch::Tensor ContextParallel::attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const auto device = q.device();
  const auto q_pos = positions_[static_cast<size_t>(group_.rank())].to(device);
  if (rotate_method_ == "allgather") {  // every rank's keys and values at once, rank-major
    auto gather = [this](const torch::Tensor& t) {  // (B, KV, T/cp, hd) -> (B, KV, T, hd); backward reduce-scatters
      return gather_sequence(t.transpose(1, 2).contiguous(), group_).transpose(1, 2);
    };
    const auto k_pos = torch::cat(positions_).to(device);
    const auto visible = q_pos.unsqueeze(1) >= k_pos.unsqueeze(0);  // (T/cp, T)
    return at::scaled_dot_product_attention(q, gather(k), gather(v), visible, /*dropout_p=*/0.0, /*is_causal=*/false,
                                            /*scale=*/std::nullopt, /*enable_gqa=*/q.size(1) != k.size(1));
  }
  // alltoall: at step i this rank holds the block of rank r - i; partial results merge as
  // out <- out - sigmoid(lse_b - lse) (out - out_b), lse <- lse - logsigmoid(lse - lse_b).
  auto [out, lse] = attention_block(q, k, v, q_pos, q_pos);
  auto k_block = k, v_block = v;
  const int64_t n = group_.size(), r = group_.rank();
  for (int64_t step = 1; step < n; ++step) {
    const auto address = reinterpret_cast<int64_t>(&group_);
    k_block = RingShift::apply(k_block, address, false);
    v_block = RingShift::apply(v_block, address, false);
    const auto k_pos = positions_[static_cast<size_t>((r - step + n) % n)].to(device);
    auto [out_b, lse_b] = attention_block(q, k_block, v_block, q_pos, k_pos);
    out = out - torch::sigmoid(lse_b - lse).unsqueeze(-1) * (out - out_b);
    lse = lse - torch::log_sigmoid(lse - lse_b);
  }
  return out.to(q.scalar_type());
}

}  // namespace titan
