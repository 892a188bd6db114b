#include "parallel/expert_parallel.h"

#include <stdexcept>
#include <string>

#include "parallel/autograd_collectives.h"

namespace titan {

ExpertParallel::ExpertParallel(ProcessGroup& ep, int64_t token_shares, int64_t token_share)
    : ep_(ep), token_shares_(token_shares), token_share_(token_share) {}

std::pair<int64_t, int64_t> ExpertParallel::token_range(int64_t n_tokens) {
  if (n_tokens % token_shares_ != 0)
    throw std::invalid_argument("Uneven split of tokens: " + std::to_string(n_tokens) + " tokens over " +
                                std::to_string(token_shares_) + " tensor-parallel ranks; batch size * seq len must divide");
  const int64_t count = n_tokens / token_shares_;
  return {token_share_ * count, count};
}

torch::Tensor ExpertParallel::run_experts(const torch::Tensor& rows, const std::vector<int64_t>& counts,
                                          const LocalExperts& local) {
  const int64_t n = ep_.size(), num_experts = static_cast<int64_t>(counts.size()), per_rank = num_experts / n;
  // Counts first: received[s * per_rank + j] rows come from rank s for local expert j.
  auto sent_counts = torch::tensor(counts, torch::kLong).to(ep_.device());
  auto received_counts = torch::empty_like(sent_counts);
  ep_.all_to_all(received_counts, sent_counts, {}, {});
  const auto received_cpu = received_counts.cpu();
  const int64_t* received = received_cpu.data_ptr<int64_t>();
  std::vector<int64_t> send_rows(static_cast<size_t>(n), 0), recv_rows(static_cast<size_t>(n), 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < per_rank; ++j) {
      send_rows[static_cast<size_t>(r)] += counts[static_cast<size_t>(r * per_rank + j)];
      recv_rows[static_cast<size_t>(r)] += received[r * per_rank + j];
    }
  const auto arrived = all_to_all_rows(rows, send_rows, recv_rows, ep_);  // (sum recv_rows, dim), source-major
  // Source-major [s0: e0 e1 ..][s1: e0 e1 ..] -> expert-major [e0: s0 s1 ..][e1: s0 s1 ..]
  std::vector<int64_t> order, local_counts(static_cast<size_t>(per_rank), 0), source_start(static_cast<size_t>(n), 0);
  for (int64_t s = 1; s < n; ++s) source_start[static_cast<size_t>(s)] = source_start[static_cast<size_t>(s - 1)] + recv_rows[static_cast<size_t>(s - 1)];
  for (int64_t j = 0; j < per_rank; ++j)
    for (int64_t s = 0; s < n; ++s) {
      int64_t begin = source_start[static_cast<size_t>(s)];
      for (int64_t jj = 0; jj < j; ++jj) begin += received[s * per_rank + jj];
      for (int64_t i = 0; i < received[s * per_rank + j]; ++i) order.push_back(begin + i);
      local_counts[static_cast<size_t>(j)] += received[s * per_rank + j];
    }
  const auto index = torch::tensor(order, torch::kLong).to(rows.device());
  const auto out = local(arrived.index_select(0, index), local_counts);  // (sum recv_rows, dim), expert-major
  const auto back = torch::zeros_like(out).index_copy(0, index, out);  // source-major again
  return all_to_all_rows(back, recv_rows, send_rows, ep_);
}

}  // namespace titan
