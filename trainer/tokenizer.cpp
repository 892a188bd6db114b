#include "trainer/tokenizer.h"

#include <filesystem>
#include <stdexcept>

#include "trainer/hf_tokenizer.h"
#include "trainer/sentencepiece_tokenizer.h"

namespace titan {

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& assets_path, std::string* note) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(assets_path))
    throw std::invalid_argument("model.hf_assets_path '" + assets_path +
                                "' is not a folder (it must hold tokenizer.json or tokenizer.model)");
  const bool json = fs::exists(fs::path(assets_path) / "tokenizer.json");
  const bool model = fs::exists(fs::path(assets_path) / "tokenizer.model");
  if (json && model && note)
    *note = "model.hf_assets_path '" + assets_path +
            "' holds tokenizer.json and tokenizer.model: using tokenizer.json (as TorchTitan does)";
  if (json) return std::make_unique<HfTokenizer>(assets_path);
  if (model) return std::make_unique<SentencePieceTokenizer>(assets_path);
  throw std::invalid_argument("model.hf_assets_path '" + assets_path +
                              "' holds neither tokenizer.json (Hugging Face BPE) nor tokenizer.model (sentencepiece; "
                              "./scripts/setup.sh builds the bundled one)");
}

}  // namespace titan
