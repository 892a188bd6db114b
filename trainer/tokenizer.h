// The tokenizer interface and its choice from a model.hf_assets_path folder: tokenizer.json
// (Hugging Face byte-level BPE, trainer/hf_tokenizer.h) or tokenizer.model (sentencepiece,
// trainer/sentencepiece_tokenizer.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace titan {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Token ids of `text`, with BOS first and EOS last when asked. Safe to call from several threads.
  virtual std::vector<int64_t> encode(const std::string& text, bool bos, bool eos) const = 0;
  // The text (bytes) of `ids`, special tokens included.
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
  // Every id is below this.
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  // The file it was read from.
  virtual const std::string& path() const = 0;
};

// The tokenizer of `assets_path`: tokenizer.json when present (as TorchTitan), else tokenizer.model.
// `note`, when given, says which file was chosen when both are there. Throws std::invalid_argument
// naming the folder or file when neither can be read.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& assets_path, std::string* note = nullptr);

}  // namespace titan
