#include "parallel/context_parallel.h"

#include <cmath>
#include <functional>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "models/common/flash_attention_cpu.h"

namespace titan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One block of the ring: this rank's query rows [q_begin, +q_len) against the key rows
// [kv_begin, +kv_len) of rank `source`'s keys and values, causal (the diagonal block) or full.
// Head-tail: step 0 is causal on everything here; a source before this rank is seen whole by
// both query chunks through its first chunk only (its second lies in both chunks' future); a
// source after it is seen whole by this rank's second chunk only. Contiguous: a source after this
// rank is in every query's future and skipped.
struct Block {
  int64_t source, q_begin, q_len, kv_begin, kv_len;
  bool causal, skipped;
};

// One block per step of the ring, step i holding rank - i's keys (skipped ones included: every rank
// shifts the ring the same number of times).
std::vector<Block> ring_blocks(int64_t rank, int64_t n, int64_t local_len, bool head_tail) {
  std::vector<Block> blocks = {{rank, 0, local_len, 0, local_len, true, false}};
  const int64_t half = local_len / 2;
  for (int64_t step = 1; step < n; ++step) {
    const int64_t s = (rank - step + n) % n;
    if (head_tail)
      blocks.push_back(s < rank ? Block{s, 0, local_len, 0, half, false, false} : Block{s, half, half, 0, local_len, false, false});
    else
      blocks.push_back({s, 0, local_len, 0, local_len, false, s > rank});
  }
  return blocks;
}

// k, v (B, KV, L, hd) -> (B, H, L, hd): query head h reads kv head h / groups.
torch::Tensor expand_heads(const torch::Tensor& t, int64_t groups) {
  return groups == 1 ? t.contiguous() : t.repeat_interleave(groups, 1);
}

// A block's attention: out (B, H, Lq, hd) in fp32 and the log-sum-exp of each query's scaled
// scores (B, H, Lq); k, v (B, KV, Lk, hd). A CPU flash kernel, ours on CPUs with AVX-512 or AVX2 (bf16 through
// fp32 where they have no AMX; flash_attention_cpu.h), else libtorch's (no L x L matrix is kept; both read grouped kv
// heads themselves), or the formula in fp32 on kv heads expanded to the query heads, one block at a time (other
// devices).
std::pair<torch::Tensor, torch::Tensor> block_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                                       bool causal, bool flash) {
  if (flash) {
    auto [out, lse] = cpu_flash_forward(q, k, v, causal);
    return {out.to(torch::kFloat32), lse};
  }
  const int64_t groups = q.size(1) / k.size(1);
  const auto kf = expand_heads(k, groups).to(torch::kFloat32), vf = expand_heads(v, groups).to(torch::kFloat32);
  auto scores = torch::matmul(q.to(torch::kFloat32), kf.transpose(-2, -1)) /
                std::sqrt(static_cast<double>(q.size(-1)));  // (B, H, Lq, Lk)
  if (causal) scores.masked_fill_(torch::ones({q.size(2), k.size(2)}, q.options().dtype(torch::kBool)).triu(1), -INFINITY);
  auto lse = torch::logsumexp(scores, -1);
  return {torch::matmul(torch::exp(scores - lse.unsqueeze(-1)), vf), lse};
}

// The block's share of the gradients given the merged output and log-sum-exp of its query rows:
// P = exp(S - lse) is the block's part of the whole softmax, so dq, dk, dv are its contributions.
// k, v (B, KV, Lk, hd); dk, dv come back per kv head, its query heads' shares summed. Our kernel
// where the CPU has AVX-512 or AVX2 (flash_attention_cpu.h), else libtorch's CPU flash
// backward, or the formula in fp32 (other devices), on kv heads expanded to the query heads.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> block_backward(const torch::Tensor& grad_out, const torch::Tensor& q,
                                                                        const torch::Tensor& k, const torch::Tensor& v,
                                                                        const torch::Tensor& out, const torch::Tensor& lse,
                                                                        bool causal, bool flash) {
  if (flash && flash_supported(q, k, causal))
    return flash_backward(grad_out, q, k, v, out.to(q.scalar_type()), lse, causal);
  const int64_t groups = q.size(1) / k.size(1);
  auto fold = [&](const torch::Tensor& d) {  // (B, H, Lk, hd) -> (B, KV, Lk, hd) in fp32
    return d.to(torch::kFloat32).view({d.size(0), k.size(1), groups, d.size(2), d.size(3)}).sum(2);
  };
  const auto ke = expand_heads(k, groups), ve = expand_heads(v, groups);  // (B, H, Lk, hd)
  if (flash) {
    auto [dq, dk, dv] = at::_scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, ke, ve, out.to(q.scalar_type()), lse, 0.0, causal);
    return {dq, fold(dk), fold(dv)};
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const auto qf = q.to(torch::kFloat32), kf = ke.to(torch::kFloat32), vf = ve.to(torch::kFloat32),
             g = grad_out.to(torch::kFloat32);
  auto scores = torch::matmul(qf, kf.transpose(-2, -1)) * scale;
  if (causal) scores.masked_fill_(torch::ones({q.size(2), k.size(2)}, q.options().dtype(torch::kBool)).triu(1), -INFINITY);
  const auto p = torch::exp(scores - lse.unsqueeze(-1));                     // (B, H, Lq, Lk)
  const auto ds = p * (torch::matmul(g, vf.transpose(-2, -1)) - (g * out).sum(-1, true));
  return {torch::matmul(ds, kf) * scale, fold(torch::matmul(ds.transpose(-2, -1), qf) * scale),
          fold(torch::matmul(p.transpose(-2, -1), g))};
}

// Every rank's packed keys and values, one per block's source: by one all-gather, or passed
// around the ring in the blocks' order (r, r - 1, ...), one all-to-all shift per step, the next
// source's shift travelling while the current one is used.
class KeyValueSource {
 public:
  KeyValueSource(const torch::Tensor& kv, ProcessGroup& group, bool gather) : group_(group), held_(kv.contiguous()) {
    if (!gather) return;
    auto flat = torch::empty({group.size() * kv.numel()}, kv.options());  // (n * numel)
    group.all_gather(flat, held_.view({-1}));
    gathered_ = flat.view([&] {
      std::vector<int64_t> shape = {group.size()};
      shape.insert(shape.end(), kv.sizes().begin(), kv.sizes().end());
      return shape;
    }());
  }
  torch::Tensor of(int64_t source) {
    if (gathered_.defined()) return gathered_[source];
    const int64_t n = group_.size();
    while (held_source_ != source) {
      if (!arrival_) start_shift();
      arrival_();
      arrival_ = nullptr;
      held_ = next_;
      held_source_ = (held_source_ + n - 1) % n;
    }
    if (!arrival_ && held_source_ != (group_.rank() + 1) % n) start_shift();  // the ring's last source needs none
    return held_;
  }

 private:
  // Rank r's held tensor goes to rank r + 1 and rank r - 1's arrives (mod n), as one all-to-all.
  void start_shift() {
    const int64_t n = group_.size(), r = group_.rank();
    next_ = torch::empty_like(held_);
    std::vector<int64_t> in_splits(static_cast<size_t>(n), 0), out_splits(static_cast<size_t>(n), 0);
    in_splits[static_cast<size_t>((r + 1) % n)] = held_.size(0);
    out_splits[static_cast<size_t>((r + n - 1) % n)] = held_.size(0);
    arrival_ = group_.start_all_to_all(next_, held_, out_splits, in_splits);
  }

  ProcessGroup& group_;
  torch::Tensor held_, next_, gathered_;
  int64_t held_source_ = group_.rank();
  std::function<void()> arrival_;
};

// Exact causal attention over the whole sequence: forward merges the blocks' outputs by their
// log-sum-exp (out <- out - sigmoid(lse_b - lse) (out - out_b), lse <- lse - logsigmoid(lse - lse_b),
// in fp32); backward runs the blocks again with the merged output and log-sum-exp, keeps dq here
// and sends each source's dk, dv back to it in one all-to-all. Only q, k, v, the output and the
// log-sum-exp are kept between them.
struct RingAttention : public torch::autograd::Function<RingAttention> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               int64_t group_address, bool head_tail, bool gather, bool flash) {
    auto& group = *reinterpret_cast<ProcessGroup*>(group_address);
    const auto blocks = ring_blocks(group.rank(), group.size(), q.size(2), head_tail);
    KeyValueSource kv(torch::stack({k, v}), group, gather);  // (2, B, KV, T', hd)
    torch::Tensor out, lse;                                   // (B, H, T', hd) fp32, (B, H, T')
    for (const Block& b : blocks) {
      const auto both = kv.of(b.source).narrow(3, b.kv_begin, b.kv_len);
      if (b.skipped) continue;
      auto [out_b, lse_b] =
          block_forward(q.narrow(2, b.q_begin, b.q_len).contiguous(), both[0], both[1], b.causal, flash);
      if (!out.defined()) {
        out = out_b, lse = lse_b;
        continue;
      }
      auto rows = out.narrow(2, b.q_begin, b.q_len);
      auto rows_lse = lse.narrow(2, b.q_begin, b.q_len);
      rows.sub_(torch::sigmoid(lse_b - rows_lse).unsqueeze(-1) * (rows - out_b));
      rows_lse.sub_(torch::log_sigmoid(rows_lse - lse_b));
    }
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["group"] = group_address;
    ctx->saved_data["head_tail"] = head_tail;
    ctx->saved_data["gather"] = gather;
    ctx->saved_data["flash"] = flash;
    return out.to(q.scalar_type());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    auto& group = *reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt());
    const int64_t n = group.size();
    const auto grad_out = grads[0].contiguous();
    KeyValueSource kv(torch::stack({k, v}), group, ctx->saved_data["gather"].toBool());
    auto dq = torch::zeros(q.sizes(), q.options().dtype(torch::kFloat32));
    std::vector<int64_t> parts_shape = {n, 2};  // (n, 2, B, KV, T', hd): dk, dv for each source
    parts_shape.insert(parts_shape.end(), k.sizes().begin(), k.sizes().end());
    auto parts = torch::zeros(parts_shape, k.options().dtype(torch::kFloat32));
    for (const Block& b : ring_blocks(group.rank(), n, q.size(2), ctx->saved_data["head_tail"].toBool())) {
      const auto both = kv.of(b.source).narrow(3, b.kv_begin, b.kv_len);
      if (b.skipped) continue;
      auto rows = [&](const torch::Tensor& t) { return t.narrow(2, b.q_begin, b.q_len).contiguous(); };
      auto [dq_b, dk_b, dv_b] = block_backward(rows(grad_out), rows(q), both[0], both[1], rows(out), rows(lse),
                                               b.causal, ctx->saved_data["flash"].toBool());
      dq.narrow(2, b.q_begin, b.q_len).add_(dq_b);
      parts[b.source][0].narrow(2, b.kv_begin, b.kv_len).add_(dk_b);
      parts[b.source][1].narrow(2, b.kv_begin, b.kv_len).add_(dv_b);
    }
    auto received = torch::empty({parts.numel()}, parts.options());  // every rank's part for this rank's keys
    group.all_to_all(received, parts.view({-1}), {}, {});
    const auto mine = received.view(parts.sizes()).sum(0);  // (2, B, KV, T', hd)
    return {dq.to(q.scalar_type()), mine[0].to(k.scalar_type()), mine[1].to(v.scalar_type()), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

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

ContextParallel::ContextParallel(ProcessGroup& group, int64_t seq_len, bool head_tail, std::string rotate_method,
                                 bool formula_blocks)
    : group_(group), head_tail_(head_tail), rotate_method_(std::move(rotate_method)), formula_blocks_(formula_blocks) {
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
  return RingAttention::apply(q, k, v, reinterpret_cast<int64_t>(&group_), head_tail_, rotate_method_ == "allgather",
                              q.device().is_cpu() && !formula_blocks_);
}

}  // namespace titan
