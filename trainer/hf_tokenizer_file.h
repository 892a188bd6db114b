// Reads a Hugging Face tokenizer.json (byte-level BPE) and the tokenizer_config.json beside it into
// the parts trainer/hf_tokenizer.h encodes with; what is not supported is a one-line error.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/bpe_model.h"
#include "trainer/regex_split.h"

namespace titan {

struct HfAddedToken {
  std::string content;
  int64_t id;
  bool normalized;  // matched after the tokens that are not (the package's two passes)
};

struct HfTokenizerFile {
  std::string path;  // of tokenizer.json
  std::unique_ptr<BpeModel> model;
  // The pre-tokenizer's steps in order: a regex split, or (null) a space put before pieces that lack one.
  std::vector<std::unique_ptr<RegexSplit>> pre_steps;
  std::vector<HfAddedToken> added;                       // tokenizer.json's, then tokenizer_config.json's
  std::vector<int64_t> template_before, template_after;  // the post-processor's ids around the text
  std::vector<std::string> token_bytes;                  // id -> what the ByteLevel decoder makes of it
  std::vector<bool> known;                               // ids that name a token
  int64_t bos_id = -1, eos_id = -1;
};

// `assets_path`: a folder holding tokenizer.json and tokenizer_config.json. Throws
// std::invalid_argument naming the file and field for anything missing or not supported.
HfTokenizerFile read_hf_tokenizer(const std::string& assets_path);

}  // namespace titan
