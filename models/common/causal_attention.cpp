#include "models/common/causal_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "models/common/matmul.h"

namespace titan {

int64_t attention_query_blocks(int64_t T) {
  return T < 128 ? 1 : std::max<int64_t>(4, T / 128);
}

torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  const int64_t B = q.size(0), KV = q.size(1), rep = q.size(2), T = q.size(3), hd = q.size(4);
  const int64_t blocks = attention_query_blocks(T), block = (T + blocks - 1) / blocks;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const auto bool_opts = torch::TensorOptions().dtype(torch::kBool).device(q.device());
  std::vector<torch::Tensor> outs;
  for (int64_t begin = 0; begin < T; begin += block) {
    const int64_t n = std::min(block, T - begin), end = begin + n;      // queries [begin, end) see keys [0, end)
    auto qb = q.narrow(3, begin, n).reshape({B, KV, rep * n, hd});      // (B, KV, rep*n, hd)
    auto scores = batched_matmul(qb, k.narrow(3, 0, end)).mul_(scale);  // (B, KV, rep*n, end)
    auto masked = torch::ones({n, end}, bool_opts).triu(begin + 1);     // query i hides keys > begin+i
    scores = scores.view({B, KV, rep, n, end}).masked_fill(masked, -std::numeric_limits<double>::infinity());
    auto probs = torch::softmax(scores, -1).view({B, KV, rep * n, end});  // (B, KV, rep*n, end)
    outs.push_back(batched_matmul(probs, v.narrow(2, 0, end)).view({B, KV, rep, n, hd}));
  }
  return outs.size() == 1 ? outs.front() : torch::cat(outs, 3);  // (B, KV, rep, T, hd)
}

}  // namespace titan
