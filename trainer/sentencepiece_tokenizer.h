// sentencepiece tokenizer read from {model.hf_assets_path}/tokenizer.model; BOS/EOS per document.
// libsentencepiece is reached through trainer/sentencepiece_shim.cpp, loaded at run time.
#pragma once

#include "trainer/tokenizer.h"

namespace titan {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // `assets_path`: a folder holding tokenizer.model. Throws std::invalid_argument naming the path.
  explicit SentencePieceTokenizer(const std::string& assets_path);
  ~SentencePieceTokenizer() override;
  SentencePieceTokenizer(const SentencePieceTokenizer&) = delete;
  SentencePieceTokenizer& operator=(const SentencePieceTokenizer&) = delete;

  std::vector<int64_t> encode(const std::string& text, bool bos, bool eos) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }
  const std::string& path() const override { return path_; }

 private:
  void* handle_ = nullptr;
  std::string path_;
  int64_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
};

}  // namespace titan
