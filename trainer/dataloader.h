// The global token stream (documents concatenated and cut into seq_len+1 windows, as TorchTitan)
// and the per-rank batches drawn from it. The cursor is global: the same stream whatever the
// data-parallel degree, so a checkpointed cursor resumes under any layout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/common/torch_api.h"
#include "trainer/document_source.h"

namespace titan {

struct DataCursor {
  int64_t epoch = 0;                 // completed passes over the data
  int64_t documents = 0;             // documents consumed in the current pass
  int64_t windows = 0;               // windows consumed in total
  std::vector<int64_t> buffer;       // tokens read but not yet in a window
};

class TokenStream {
 public:
  // `infinite`: loop over the documents again at their end (training), else stop there (validation).
  TokenStream(std::unique_ptr<DocumentSource> source, int64_t window, bool infinite = true);
  // The next window of `window` tokens into *out (nullptr: consume it unseen). False at the end of
  // finite data (the tokens left over make no whole window).
  bool next(std::vector<int64_t>* out);
  const DataCursor& cursor() const { return cursor_; }
  void restore(const DataCursor& cursor);  // replays the source up to the cursor's document
  const DocumentSource& source() const { return *source_; }

 private:
  std::unique_ptr<DocumentSource> source_;
  int64_t window_;
  bool infinite_;
  DataCursor cursor_;
  std::vector<int64_t> doc_;
};

struct Batch {
  torch::Tensor input;   // (B, T) int64
  torch::Tensor labels;  // (B, T) int64, input shifted by one
};

// Each call to next() consumes dp_degree * local_batch windows of the global stream and returns
// this rank's local_batch of them; nothing at the end of finite data (a last incomplete global batch
// is left out, so every rank runs the same batches).
class DataLoader {
 public:
  DataLoader(std::unique_ptr<TokenStream> stream, int64_t local_batch, int64_t seq_len, int64_t dp_rank,
             int64_t dp_degree, int64_t vocab_size);
  std::optional<Batch> next();
  TokenStream& stream() { return *stream_; }

 private:
  std::unique_ptr<TokenStream> stream_;
  int64_t local_batch_, seq_len_, dp_rank_, dp_degree_, vocab_size_;
};

}  // namespace titan
