#include "trainer/dataloader.h"

#include <algorithm>
#include <stdexcept>

namespace titan {

TokenStream::TokenStream(std::unique_ptr<DocumentSource> source, int64_t window, bool infinite)
    : source_(std::move(source)), window_(window), infinite_(infinite) {}

bool TokenStream::next(std::vector<int64_t>* out) {
  auto& buf = cursor_.buffer;
  bool any_in_pass = cursor_.documents > 0;
  while (static_cast<int64_t>(buf.size()) < window_) {
    if (!source_->next(&doc_)) {
      if (!any_in_pass) throw std::invalid_argument("dataset '" + source_->describe() + "' is empty (no documents)");
      if (!infinite_) return false;
      // Infinite data: loop over the documents again, as TorchTitan's training datasets do.
      ++cursor_.epoch;
      cursor_.documents = 0;
      any_in_pass = false;
      source_->rewind();
      continue;
    }
    ++cursor_.documents;
    any_in_pass = any_in_pass || !doc_.empty();
    buf.insert(buf.end(), doc_.begin(), doc_.end());
  }
  if (out) out->assign(buf.begin(), buf.begin() + window_);
  buf.erase(buf.begin(), buf.begin() + window_);
  ++cursor_.windows;
  return true;
}

void TokenStream::restore(const DataCursor& cursor) {
  source_->rewind();
  for (int64_t i = 0; i < cursor.documents; ++i) {
    if (!source_->next(nullptr))
      throw std::invalid_argument("dataset '" + source_->describe() + "' has fewer documents than the checkpoint's cursor (" +
                                  std::to_string(cursor.documents) + "): is it the same data?");
  }
  cursor_ = cursor;
}

DataLoader::DataLoader(std::unique_ptr<TokenStream> stream, int64_t local_batch, int64_t seq_len, int64_t dp_rank,
                       int64_t dp_degree, int64_t vocab_size)
    : stream_(std::move(stream)),
      local_batch_(local_batch),
      seq_len_(seq_len),
      dp_rank_(dp_rank),
      dp_degree_(dp_degree),
      vocab_size_(vocab_size) {}

std::optional<Batch> DataLoader::next() {
  const int64_t window = seq_len_ + 1;
  auto tokens = torch::empty({local_batch_, window}, torch::kInt64);  // (B, T+1)
  auto* dst = tokens.data_ptr<int64_t>();
  std::vector<int64_t> w;
  for (int64_t r = 0; r < dp_degree_; ++r) {
    for (int64_t b = 0; b < local_batch_; ++b) {
      if (!stream_->next(r == dp_rank_ ? &w : nullptr)) return std::nullopt;
      if (r != dp_rank_) continue;
      auto [lo, hi] = std::minmax_element(w.begin(), w.end());
      if (*lo < 0 || *hi >= vocab_size_)
        throw std::invalid_argument("dataset '" + stream_->source().describe() + "' holds token id " +
                                    std::to_string(*lo < 0 ? *lo : *hi) + ", outside the model's vocabulary [0, " +
                                    std::to_string(vocab_size_) + ")");
      std::copy(w.begin(), w.end(), dst + b * window);
    }
  }
  return Batch{tokens.slice(1, 0, seq_len_), tokens.slice(1, 1, window)};
}

}  // namespace titan
