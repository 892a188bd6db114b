// A Hugging Face tokenizer.json (Llama 3's format: byte-level BPE with merges, a Split regex
// pre-tokenizer, added special tokens, a TemplateProcessing post-processor) read from
// {model.hf_assets_path}, with BOS/EOS named by the tokenizer_config.json beside it.
#pragma once

#include <memory>
#include <string_view>

#include "trainer/bpe_model.h"
#include "trainer/regex_split.h"
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
  int64_t vocab_size() const override { return static_cast<int64_t>(token_bytes_.size()); }
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }
  const std::string& path() const override { return path_; }

 private:
  struct AddedToken {
    std::string content;
    int64_t id;
    bool normalized;  // matched after the tokens that are not (the package's two passes)
  };
  // One pre-tokenizer step: a regex split, or a space put before pieces that lack one.
  struct PreStep {
    std::unique_ptr<RegexSplit> split;
  };
  // Added tokens of one pass, indexed by first byte, longest first (leftmost-longest matching).
  struct AddedPass {
    std::vector<std::vector<const AddedToken*>> by_first_byte = std::vector<std::vector<const AddedToken*>>(256);
  };

  std::vector<int64_t> encode_with_template(std::string_view text) const;
  void split_added(std::string_view text, size_t pass, std::vector<int64_t>* out) const;
  void pre_tokenize(size_t step, std::string_view piece, std::vector<int64_t>* out) const;

  std::string path_;
  std::unique_ptr<BpeModel> model_;
  std::vector<PreStep> steps_;
  std::vector<AddedToken> added_;
  AddedPass passes_[2];
  std::vector<int64_t> template_before_, template_after_;  // the post-processor's tokens around the text
  std::vector<std::string> token_bytes_;                   // id -> its bytes, for decode
  std::vector<bool> known_;                                // ids that name a token
  int64_t bos_id_ = -1, eos_id_ = -1;
  bool adds_bos_ = false, adds_eos_ = false;
};

}  // namespace titan
