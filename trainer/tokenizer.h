// sentencepiece tokenizer read from {model.hf_assets_path}/tokenizer.model; BOS/EOS per document.
// libsentencepiece is reached through trainer/sentencepiece_shim.cpp, loaded at run time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace titan {

class Tokenizer {
 public:
  // `assets_path`: a folder holding tokenizer.model. Throws std::invalid_argument naming the path.
  explicit Tokenizer(const std::string& assets_path);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, with BOS first and EOS last when asked.
  std::vector<int64_t> encode(const std::string& text, bool bos, bool eos) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return vocab_size_; }
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  const std::string& path() const { return path_; }

 private:
  void* handle_ = nullptr;
  std::string path_;
  int64_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1;
};

}  // namespace titan
