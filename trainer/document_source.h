// Documents of a dataset, read in order as token ids: text (.txt), JSON lines (.jsonl/.json, `text`
// field; gzip-compressed too) tokenized with BOS/EOS, or a pre-tokenized 1-D .npy used as-is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace titan {

class Tokenizer;

class DocumentSource {
 public:
  virtual ~DocumentSource() = default;
  // The next document's tokens into *tokens (nullptr: skip it without tokenizing). False at the end.
  virtual bool next(std::vector<int64_t>* tokens) = 0;
  // The next document's text, untokenized (text sources only). False at the end.
  virtual bool next_text(std::string* text);
  // Back to the first document.
  virtual void rewind() = 0;
  // Names the data for messages.
  virtual std::string describe() const = 0;
  // True when the source needs no tokenizer (pre-tokenized data).
  virtual bool pretokenized() const { return false; }
};

// A document's tokens as training reads them: BOS, the text's ids, EOS.
std::vector<int64_t> encode_document(const Tokenizer& tokenizer, const std::string& text);

// `path` is a file or a folder of such files (read in name order). `tokenizer` may be null only
// for .npy data. Throws std::invalid_argument naming the path when it cannot be read.
std::unique_ptr<DocumentSource> open_document_source(const std::string& path, const Tokenizer* tokenizer);

// True when `path` is pre-tokenized data that needs no tokenizer.
bool is_pretokenized_path(const std::string& path);

}  // namespace titan
