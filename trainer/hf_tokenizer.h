// A Hugging Face tokenizer.json (Llama 3's format: byte-level BPE with merges, a Split regex
// pre-tokenizer, added special tokens, a TemplateProcessing post-processor) read from
// {model.hf_assets_path}, with BOS/EOS named by the tokenizer_config.json beside it.
#pragma once

#include <array>
#include <memory>
#include <string_view>

#include "trainer/hf_tokenizer_file.h"
#include "trainer/tokenizer.h"

namespace titan {

class HfTokenizer : public Tokenizer {
 public:
  // `assets_path`: a folder holding tokenizer.json and tokenizer_config.json. Throws
  // std::invalid_argument naming the file and field for anything missing or not supported.
  explicit HfTokenizer(const std::string& assets_path);

  // As TorchTitan's HuggingFaceTokenizer.encode(text, add_bos=bos, add_eos=eos): the
  // post-processor's tokens always, BOS/EOS added only where the post-processor does not add them.
  std::vector<int64_t> encode(const std::string& text, bool bos, bool eos) const override;
  std::string decode(const std::vector<int64_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(file_.token_bytes.size()); }
  int64_t bos_id() const override { return file_.bos_id; }
  int64_t eos_id() const override { return file_.eos_id; }
  const std::string& path() const override { return file_.path; }

 private:
  void split_added(std::string_view text, size_t pass, std::vector<int64_t>* out) const;
  void pre_tokenize(size_t step, std::string_view piece, std::vector<int64_t>* out) const;

  HfTokenizerFile file_;
  // Per pass (not normalized, normalized): the added tokens by first byte, longest first, for
  // leftmost-longest matching.
  std::array<std::array<std::vector<const HfAddedToken*>, 256>, 2> passes_;
  bool adds_bos_ = false, adds_eos_ = false;
};

}  // namespace titan
