#include "trainer/hf_tokenizer_file.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <unordered_map>

#include "checkpoint/json_fields.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Err = std::invalid_argument;

// The ByteLevel pre-tokenizer's own split (GPT-2's pattern, as in the `tokenizers` package).
const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// GPT-2's bytes_to_unicode, inverted: code point -> byte (-1: not a byte-level character).
const std::vector<int>& char_to_byte() {
  static const std::vector<int> table = [] {
    std::vector<int> t(324, -1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[printable ? b : 256 + extra++] = b;
    }
    return t;
  }();
  return table;
}

// The code points of UTF-8 `s` (JSON strings are valid UTF-8), with each one's bytes.
std::vector<std::pair<uint32_t, std::string_view>> code_points(std::string_view s) {
  std::vector<std::pair<uint32_t, std::string_view>> out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.emplace_back(cp, s.substr(i, n));
    i += n;
  }
  return out;
}

// The bytes a byte-level token stands for; nullopt when it has a character outside the alphabet.
std::optional<std::string> byte_level_bytes(const std::string& token) {
  std::string bytes;
  for (const auto& [cp, utf8] : code_points(token)) {
    if (cp >= char_to_byte().size() || char_to_byte()[cp] < 0) return std::nullopt;
    bytes += static_cast<char>(char_to_byte()[cp]);
  }
  return bytes;
}

// What the ByteLevel decoder makes of a token: its characters mapped back to bytes, the others kept.
std::string decoded_bytes(const std::string& token) {
  std::string bytes;
  for (const auto& [cp, utf8] : code_points(token)) {
    if (cp < char_to_byte().size() && char_to_byte()[cp] >= 0) {
      bytes += static_cast<char>(char_to_byte()[cp]);
    } else {
      bytes += utf8;
    }
  }
  return bytes;
}

// Field access that names the file and field in its errors.
struct Fields {
  std::string file;

  const json& get(const json& j, const std::string& name, const std::string& where) const {
    if (!j.is_object() || !j.contains(name)) throw Err(file + ": field '" + where + name + "' is missing");
    return j.at(name);
  }
  std::string type(const json& j, const std::string& where) const {
    const json& t = get(j, "type", where);
    if (!t.is_string()) throw Err(file + ": field '" + where + "type' is not a string");
    return t.get<std::string>();
  }
  bool flag(const json& j, const std::string& name, bool fallback, const std::string& where) const {
    if (!j.contains(name) || j.at(name).is_null()) return fallback;
    if (!j.at(name).is_boolean()) throw Err(file + ": field '" + where + name + "' is not true or false");
    return j.at(name).get<bool>();
  }
  [[noreturn]] void unsupported(const std::string& field, const std::string& value, const std::string& valid) const {
    throw Err(file + ": " + field + " " + value + " is not supported (valid: " + valid + ")");
  }
};

// model: byte-level BPE. Returns the vocabulary's tokens and ids (for decode) through *tokens.
std::unique_ptr<BpeModel> read_model(const json& root, const Fields& f,
                                     std::vector<std::pair<std::string, int64_t>>* tokens) {
  const json& model = f.get(root, "model", "");
  const std::string model_type = f.type(model, "model.");
  if (model_type != "BPE") f.unsupported("model.type", "'" + model_type + "'", "BPE");
  if (model.contains("dropout") && !model["dropout"].is_null())
    f.unsupported("model.dropout", model["dropout"].dump(), "null");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null() && model[key] != "")
      f.unsupported(std::string("model.") + key, model[key].dump(), "null");
  if (f.flag(model, "byte_fallback", false, "model.")) f.unsupported("model.byte_fallback", "true", "false");
  const json& vocab = f.get(model, "vocab", "model.");
  if (!vocab.is_object()) throw Err(f.file + ": field 'model.vocab' is not an object of token: id");
  std::unordered_map<std::string, int64_t> byte_vocab;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Err(f.file + ": model.vocab['" + token + "'] is not a non-negative integer id");
    tokens->emplace_back(token, id.get<int64_t>());
    if (auto bytes = byte_level_bytes(token)) byte_vocab.emplace(std::move(*bytes), id.get<int64_t>());
  }
  auto vocab_id = [&](const std::string& token, const std::string& field) {
    auto it = vocab.find(token);
    if (it == vocab.end()) throw Err(f.file + ": " + field + " names '" + token + "', which is not in model.vocab");
    return it->get<int64_t>();
  };
  const json& merges = f.get(model, "merges", "model.");
  if (!merges.is_array()) throw Err(f.file + ": field 'model.merges' is not a list");
  std::vector<std::pair<std::pair<int64_t, int64_t>, int64_t>> merge_ids;
  merge_ids.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    const json& m = merges[i];
    if (m.is_string() && m.get<std::string>().find(' ') != std::string::npos) {  // "a b", the older format
      const auto s = m.get<std::string>();
      left = s.substr(0, s.find(' ')), right = s.substr(s.find(' ') + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      throw Err(f.file + ": " + field + " is neither \"left right\" nor [\"left\", \"right\"]");
    }
    merge_ids.push_back({{vocab_id(left, field), vocab_id(right, field)}, vocab_id(left + right, field + "'s result")});
  }
  BpeOptions options;
  options.ignore_merges = f.flag(model, "ignore_merges", false, "model.");
  options.fuse_unk = f.flag(model, "fuse_unk", false, "model.");
  if (model.contains("unk_token") && !model["unk_token"].is_null())
    options.unk_id = vocab_id(model["unk_token"].get<std::string>(), "model.unk_token");
  return std::make_unique<BpeModel>(std::move(byte_vocab), merge_ids, options);
}

// pre_tokenizer: ByteLevel, or Split steps then ByteLevel, in a Sequence. Appends to *steps; true
// once ByteLevel is read.
bool read_pre_tokenizer(const json& p, const std::string& where, const Fields& f, bool byte_level,
                        std::vector<std::unique_ptr<RegexSplit>>* steps) {
  const std::string type = f.type(p, where + ".");
  if (byte_level)
    throw Err(f.file + ": " + where + " (" + type + ") comes after ByteLevel, which must be the last step");
  if (type == "Sequence") {
    const json& list = f.get(p, "pretokenizers", where + ".");
    for (size_t i = 0; i < list.size(); ++i)
      byte_level =
          read_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", f, byte_level, steps);
    return byte_level;
  }
  if (type == "Split") {
    const json& pattern = f.get(p, "pattern", where + ".");
    const std::string behavior = f.get(p, "behavior", where + ".").get<std::string>();
    if (behavior != "Isolated") f.unsupported(where + ".behavior", "'" + behavior + "'", "Isolated");
    if (f.flag(p, "invert", false, where + ".")) f.unsupported(where + ".invert", "true", "false");
    const bool literal = pattern.contains("String");
    if (!literal && !pattern.contains("Regex"))
      throw Err(f.file + ": field '" + where + ".pattern' has neither \"Regex\" nor \"String\"");
    try {
      steps->push_back(
          std::make_unique<RegexSplit>(pattern.at(literal ? "String" : "Regex").get<std::string>(), literal));
    } catch (const Err& e) {
      throw Err(f.file + ": " + where + ".pattern: " + e.what());
    }
    return false;
  }
  if (type != "ByteLevel") f.unsupported(where + ".type", "'" + type + "'", "Sequence, Split, ByteLevel");
  if (f.flag(p, "add_prefix_space", true, where + ".")) steps->push_back(nullptr);
  if (f.flag(p, "use_regex", true, where + ".")) steps->push_back(std::make_unique<RegexSplit>(kGpt2Pattern, false));
  return true;
}

// The id the package gives a token it adds: the vocabulary's, else the next after the model's and
// the added ones.
int64_t added_token_id(const std::string& content, const json& vocab, const std::vector<HfAddedToken>& added) {
  if (auto it = vocab.find(content); it != vocab.end()) return it->get<int64_t>();
  int64_t id = static_cast<int64_t>(vocab.size());
  for (const auto& a : added) id = std::max(id, a.id + 1);
  return id;
}

// added_tokens of tokenizer.json, whose ids must be the ones the package gives them when it loads
// the file (it ignores the written ones).
std::vector<HfAddedToken> read_added_tokens(const json& root, const Fields& f) {
  std::vector<HfAddedToken> added;
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return added;
  const json& list = root["added_tokens"];
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = "added_tokens[" + std::to_string(i) + "].";
    const json& t = list[i];
    const std::string content = f.get(t, "content", where).get<std::string>();
    for (const char* opt : {"single_word", "lstrip", "rstrip"})
      if (f.flag(t, opt, false, where)) f.unsupported(where + opt, "true for '" + content + "'", "false");
    const int64_t id = f.get(t, "id", where).get<int64_t>();
    const int64_t expected = added_token_id(content, root["model"]["vocab"], added);
    if (id != expected)
      throw Err(f.file + ": " + where + "id of '" + content + "' is " + std::to_string(id) + ", but the tokenizers " +
                "package gives it " + std::to_string(expected) + " (added tokens follow the vocabulary, in order)");
    added.push_back({content, id, f.flag(t, "normalized", true, where)});
  }
  return added;
}

// The special tokens of tokenizer_config.json, added as TorchTitan's HuggingFaceTokenizer adds
// them (a token absent from tokenizer.json gets the next id); sets BOS and EOS.
void read_config_tokens(const std::string& assets_path, const json& vocab, HfTokenizerFile* file) {
  const std::string config_path = (fs::path(assets_path) / "tokenizer_config.json").string();
  if (!fs::exists(config_path))
    throw Err("model.hf_assets_path '" + assets_path +
              "' has tokenizer.json but no tokenizer_config.json (it names "
              "bos_token and eos_token, which every document starts and ends with)");
  const auto config = read_json_file<nlohmann::ordered_json>(config_path);  // TorchTitan adds its tokens in file order
  auto& added = file->added;
  auto find_added = [&](const std::string& content) {
    return std::find_if(added.begin(), added.end(), [&](const HfAddedToken& a) { return a.content == content; });
  };
  auto token_name = [&](const nlohmann::ordered_json& value, const std::string& key) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string())
      return value["content"].get<std::string>();
    throw Err(config_path + ": field '" + key + "' is neither a string nor {\"content\": string}");
  };
  auto add_special = [&](const std::string& content, bool normalized) {
    if (find_added(content) == added.end())
      added.push_back({content, added_token_id(content, vocab, added), normalized});
  };
  std::string names[2];
  for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}) {
    if (!config.contains(key) || config[key].is_null()) continue;
    const std::string name = token_name(config[key], key);
    add_special(name, config[key].is_object() && config[key].value("normalized", true));
    if (std::string(key) == "bos_token") names[0] = name;
    if (std::string(key) == "eos_token") names[1] = name;
  }
  if (config.contains("added_tokens_decoder") && config["added_tokens_decoder"].is_object())
    for (const auto& [id, t] : config["added_tokens_decoder"].items())
      if (t.is_object() && t.contains("content"))
        add_special(token_name(t, "added_tokens_decoder." + id), t.value("normalized", true));
  // TorchTitan adds no BOS/EOS when the config names none: documents would run together unseparated.
  for (int k = 0; k < 2; ++k)
    if (names[k].empty())
      throw Err(config_path + ": field '" + (k == 0 ? "bos_token" : "eos_token") +
                "' is missing (every document starts with BOS and ends with EOS)");
  file->bos_id = find_added(names[0])->id;
  file->eos_id = find_added(names[1])->id;
}

// post_processor: the single-sequence template's tokens before and after the text.
void read_post_processor(const json& p, const std::string& where, const Fields& f, HfTokenizerFile* file) {
  if (p.is_null()) return;
  const std::string type = f.type(p, where + ".");
  if (type == "Sequence") {
    const json& list = f.get(p, "processors", where + ".");
    for (size_t i = 0; i < list.size(); ++i)
      read_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]", f, file);
  } else if (type == "TemplateProcessing") {
    const json& special = f.get(p, "special_tokens", where + ".");
    std::vector<int64_t> before, after;
    bool seen_text = false;
    for (const json& piece : f.get(p, "single", where + ".")) {
      if (piece.contains("Sequence")) {
        seen_text = true;
        continue;
      }
      const json& token = f.get(piece, "SpecialToken", where + ".single[].");
      const std::string name = f.get(token, "id", where + ".single[].SpecialToken.").get<std::string>();
      const json& ids =
          f.get(f.get(special, name, where + ".special_tokens."), "ids", where + ".special_tokens." + name + ".");
      for (const json& id : ids) (seen_text ? after : before).push_back(id.get<int64_t>());
    }
    file->template_before.insert(file->template_before.begin(), before.begin(), before.end());
    file->template_after.insert(file->template_after.end(), after.begin(), after.end());
  } else if (type != "ByteLevel") {  // ByteLevel only trims offsets, which have no ids
    f.unsupported(where + ".type", "'" + type + "'", "TemplateProcessing, ByteLevel, Sequence, null");
  }
}

}  // namespace

HfTokenizerFile read_hf_tokenizer(const std::string& assets_path) {
  HfTokenizerFile file;
  file.path = (fs::path(assets_path) / "tokenizer.json").string();
  const json root = read_json_file(file.path);
  const Fields f{file.path};
  std::vector<std::pair<std::string, int64_t>> tokens;
  file.model = read_model(root, f, &tokens);
  if (root.contains("normalizer") && !root["normalizer"].is_null())
    f.unsupported("normalizer.type", "'" + f.type(root["normalizer"], "normalizer.") + "'", "null");
  const json& pre = f.get(root, "pre_tokenizer", "");
  if (pre.is_null()) f.unsupported("pre_tokenizer", "null", "ByteLevel, or a Sequence ending in ByteLevel");
  if (!read_pre_tokenizer(pre, "pre_tokenizer", f, false, &file.pre_steps))
    throw Err(file.path + ": pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
  const json& decoder = f.get(root, "decoder", "");
  if (decoder.is_null()) f.unsupported("decoder", "null", "ByteLevel");
  if (f.type(decoder, "decoder.") != "ByteLevel")
    f.unsupported("decoder.type", "'" + f.type(decoder, "decoder.") + "'", "ByteLevel");
  file.added = read_added_tokens(root, f);
  read_config_tokens(assets_path, root["model"]["vocab"], &file);
  if (root.contains("post_processor")) read_post_processor(root["post_processor"], "post_processor", f, &file);

  // Decode table; its size, the vocabulary size, covers every id.
  int64_t size = 0;
  for (const auto& [token, id] : tokens) size = std::max(size, id + 1);
  for (const auto& a : file.added) size = std::max(size, a.id + 1);
  for (int64_t id : file.template_before) size = std::max(size, id + 1);
  for (int64_t id : file.template_after) size = std::max(size, id + 1);
  file.token_bytes.assign(static_cast<size_t>(size), "");
  file.known.assign(static_cast<size_t>(size), false);
  for (const auto& [token, id] : tokens) file.token_bytes[id] = decoded_bytes(token), file.known[id] = true;
  for (const auto& a : file.added) file.token_bytes[a.id] = decoded_bytes(a.content), file.known[a.id] = true;
  return file;
}

}  // namespace titan
