#include "parallel/autograd_collectives.h"

namespace titan {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ProcessGroup& group_of(AutogradContext* ctx) { return *reinterpret_cast<ProcessGroup*>(ctx->saved_data["group"].toInt()); }

// (B, T/n, ...) on each rank -> (B, T, ...), ranks' pieces in order along dim 1.
torch::Tensor all_gathered_dim1(const torch::Tensor& x, ProcessGroup& group) {
  const int64_t n = group.size();
  auto in = x.contiguous();
  auto out = torch::empty({n * in.numel()}, in.options());
  group.all_gather(out, in.view({-1}));
  auto sizes = in.sizes().vec();
  std::vector<int64_t> stacked = {n};
  stacked.insert(stacked.end(), sizes.begin(), sizes.end());  // (n, B, T/n, ...)
  sizes[1] *= n;
  return out.view(stacked).transpose(0, 1).reshape(sizes);  // (B, T, ...)
}

// (B, T, ...) -> (B, T/n, ...): this rank's sequence slice of the sum over ranks.
torch::Tensor reduce_scattered_dim1(const torch::Tensor& x, ProcessGroup& group) {
  const int64_t n = group.size();
  auto sizes = x.sizes().vec();
  TORCH_CHECK(sizes[1] % n == 0, "sequence length ", sizes[1], " does not split over ", n, " tensor-parallel ranks");
  std::vector<int64_t> split = {sizes[0], n, sizes[1] / n};
  split.insert(split.end(), sizes.begin() + 2, sizes.end());  // (B, n, T/n, ...)
  auto in = x.reshape(split).transpose(0, 1).contiguous();     // (n, B, T/n, ...)
  sizes[1] /= n;
  auto out = torch::empty(sizes, x.options());
  group.reduce_scatter_sum(out, in.view({-1}));
  return out;
}

struct GatherSequence : public torch::autograd::Function<GatherSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return all_gathered_dim1(x, *reinterpret_cast<ProcessGroup*>(group));
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {reduce_scattered_dim1(g[0], group_of(ctx)), {}};
  }
};

struct ReduceScatterSequence : public torch::autograd::Function<ReduceScatterSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return reduce_scattered_dim1(x, *reinterpret_cast<ProcessGroup*>(group));
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_gathered_dim1(g[0], group_of(ctx)), {}};
  }
};

struct GatherLastDim : public torch::autograd::Function<GatherLastDim> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    ProcessGroup& g = *reinterpret_cast<ProcessGroup*>(group);
    auto in = x.contiguous();
    auto out = torch::empty({g.size() * in.numel()}, in.options());
    g.all_gather(out, in.view({-1}));
    std::vector<int64_t> stacked = {g.size()};
    stacked.insert(stacked.end(), in.sizes().begin(), in.sizes().end());  // (n, ..., V/n)
    auto sizes = in.sizes().vec();
    sizes.back() *= g.size();
    return out.view(stacked).movedim(0, -2).reshape(sizes);  // (..., n, V/n) -> (..., V)
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    ProcessGroup& group = group_of(ctx);
    const int64_t piece = g[0].size(-1) / group.size();
    return {g[0].narrow(-1, group.rank() * piece, piece).contiguous(), {}};
  }
};

// (sum of recv_rows, ...) <- every rank's block of rows for this one.
torch::Tensor exchanged_rows(const torch::Tensor& x, const std::vector<int64_t>& send_rows, const std::vector<int64_t>& recv_rows,
                             ProcessGroup& group) {
  auto sizes = x.sizes().vec();
  sizes[0] = 0;
  for (int64_t r : recv_rows) sizes[0] += r;
  auto out = torch::empty(sizes, x.options());
  group.all_to_all(out, x.contiguous(), recv_rows, send_rows);
  return out;
}

struct AllToAllRows : public torch::autograd::Function<AllToAllRows> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, std::vector<int64_t> send_rows,
                               std::vector<int64_t> recv_rows, int64_t group) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["send_rows"] = send_rows;
    ctx->saved_data["recv_rows"] = recv_rows;
    return exchanged_rows(x, send_rows, recv_rows, *reinterpret_cast<ProcessGroup*>(group));
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {exchanged_rows(g[0], ctx->saved_data["recv_rows"].toIntVector(), ctx->saved_data["send_rows"].toIntVector(),
                           group_of(ctx)),
            {}, {}, {}};
  }
};

int64_t address(ProcessGroup& group) { return reinterpret_cast<int64_t>(&group); }

}  // namespace

torch::Tensor gather_sequence(const torch::Tensor& x, ProcessGroup& group) { return GatherSequence::apply(x, address(group)); }
torch::Tensor reduce_scatter_sequence(const torch::Tensor& x, ProcessGroup& group) {
  return ReduceScatterSequence::apply(x, address(group));
}
torch::Tensor gather_last_dim(const torch::Tensor& x, ProcessGroup& group) { return GatherLastDim::apply(x, address(group)); }

torch::Tensor all_to_all_rows(const torch::Tensor& x, const std::vector<int64_t>& send_rows,
                              const std::vector<int64_t>& recv_rows, ProcessGroup& group) {
  return AllToAllRows::apply(x, send_rows, recv_rows, address(group));
}

}  // namespace titan
