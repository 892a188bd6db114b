#include "trainer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>

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

template <class Json = json>
Json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Err("cannot open " + path);
  try {
    return Json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Err(path + ": invalid JSON (" + e.what() + ")");
  }
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

}  // namespace

HfTokenizer::HfTokenizer(const std::string& assets_path) {
  path_ = (fs::path(assets_path) / "tokenizer.json").string();
  const json root = read_json(path_);
  const Fields f{path_};

  // Model: byte-level BPE.
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
  if (!vocab.is_object()) throw Err(path_ + ": field 'model.vocab' is not an object of token: id");
  std::unordered_map<std::string, int64_t> byte_vocab;
  std::vector<std::pair<std::string, int64_t>> tokens;  // every id's token, for decode
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0)
      throw Err(path_ + ": model.vocab['" + token + "'] is not a non-negative integer id");
    tokens.emplace_back(token, id.get<int64_t>());
    if (auto bytes = byte_level_bytes(token)) byte_vocab.emplace(std::move(*bytes), id.get<int64_t>());
  }
  auto vocab_id = [&](const std::string& token, const std::string& field) {
    auto it = vocab.find(token);
    if (it == vocab.end()) throw Err(path_ + ": " + field + " names '" + token + "', which is not in model.vocab");
    return it->get<int64_t>();
  };
  const json& merges = f.get(model, "merges", "model.");
  if (!merges.is_array()) throw Err(path_ + ": field 'model.merges' is not a list");
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
      throw Err(path_ + ": " + field + " is neither \"left right\" nor [\"left\", \"right\"]");
    }
    merge_ids.push_back({{vocab_id(left, field), vocab_id(right, field)}, vocab_id(left + right, field + "'s result")});
  }
  BpeOptions options;
  options.ignore_merges = f.flag(model, "ignore_merges", false, "model.");
  options.fuse_unk = f.flag(model, "fuse_unk", false, "model.");
  if (model.contains("unk_token") && !model["unk_token"].is_null())
    options.unk_id = vocab_id(model["unk_token"].get<std::string>(), "model.unk_token");
  model_ = std::make_unique<BpeModel>(std::move(byte_vocab), merge_ids, options);

  // Normalizer, pre-tokenizer and decoder: none, Split/ByteLevel, ByteLevel.
  if (root.contains("normalizer") && !root["normalizer"].is_null())
    f.unsupported("normalizer.type", "'" + f.type(root["normalizer"], "normalizer.") + "'", "null");
  bool byte_level = false;
  std::function<void(const json&, const std::string&)> add_step = [&](const json& p, const std::string& where) {
    const std::string type = f.type(p, where + ".");
    if (byte_level)
      throw Err(path_ + ": " + where + " (" + type + ") comes after ByteLevel, which must be the last step");
    if (type == "Sequence") {
      const json& list = f.get(p, "pretokenizers", where + ".");
      for (size_t i = 0; i < list.size(); ++i) add_step(list[i], where + ".pretokenizers[" + std::to_string(i) + "]");
    } else if (type == "Split") {
      const json& pattern = f.get(p, "pattern", where + ".");
      const std::string behavior = f.get(p, "behavior", where + ".").get<std::string>();
      if (behavior != "Isolated") f.unsupported(where + ".behavior", "'" + behavior + "'", "Isolated");
      if (f.flag(p, "invert", false, where + ".")) f.unsupported(where + ".invert", "true", "false");
      const bool literal = pattern.contains("String");
      if (!literal && !pattern.contains("Regex"))
        throw Err(path_ + ": field '" + where + ".pattern' has neither \"Regex\" nor \"String\"");
      try {
        steps_.push_back(
            {std::make_unique<RegexSplit>(pattern.at(literal ? "String" : "Regex").get<std::string>(), literal)});
      } catch (const Err& e) {
        throw Err(path_ + ": " + where + ".pattern: " + e.what());
      }
    } else if (type == "ByteLevel") {
      byte_level = true;
      if (f.flag(p, "add_prefix_space", true, where + ".")) steps_.push_back({nullptr});
      if (f.flag(p, "use_regex", true, where + "."))
        steps_.push_back({std::make_unique<RegexSplit>(kGpt2Pattern, false)});
    } else {
      f.unsupported(where + ".type", "'" + type + "'", "Sequence, Split, ByteLevel");
    }
  };
  const json& pre = f.get(root, "pre_tokenizer", "");
  if (pre.is_null()) f.unsupported("pre_tokenizer", "null", "ByteLevel, or a Sequence ending in ByteLevel");
  add_step(pre, "pre_tokenizer");
  if (!byte_level) throw Err(path_ + ": pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
  const json& decoder = f.get(root, "decoder", "");
  if (decoder.is_null()) f.unsupported("decoder", "null", "ByteLevel");
  if (f.type(decoder, "decoder.") != "ByteLevel")
    f.unsupported("decoder.type", "'" + f.type(decoder, "decoder.") + "'", "ByteLevel");

  // Added tokens: the file's, then the special tokens of tokenizer_config.json as TorchTitan adds them.
  int64_t model_size = static_cast<int64_t>(vocab.size());
  auto find_added = [&](const std::string& content) {
    return std::find_if(added_.begin(), added_.end(), [&](const AddedToken& a) { return a.content == content; });
  };
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& list = root["added_tokens"];
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "].";
      const json& t = list[i];
      const std::string content = f.get(t, "content", where).get<std::string>();
      for (const char* opt : {"single_word", "lstrip", "rstrip"})
        if (f.flag(t, opt, false, where)) f.unsupported(where + opt, "true for '" + content + "'", "false");
      added_.push_back({content, f.get(t, "id", where).get<int64_t>(), f.flag(t, "normalized", true, where)});
    }
  }
  const std::string config_path = (fs::path(assets_path) / "tokenizer_config.json").string();
  if (!fs::exists(config_path))
    throw Err("model.hf_assets_path '" + assets_path +
              "' has tokenizer.json but no tokenizer_config.json (it names "
              "bos_token and eos_token, which every document starts and ends with)");
  const auto config = read_json<nlohmann::ordered_json>(config_path);  // TorchTitan adds its tokens in file order
  auto token_name = [&](const nlohmann::ordered_json& value, const std::string& key) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string())
      return value["content"].get<std::string>();
    throw Err(config_path + ": field '" + key + "' is neither a string nor {\"content\": string}");
  };
  auto add_special = [&](const std::string& content, bool normalized) {
    if (find_added(content) != added_.end()) return;
    int64_t id = -1;
    if (auto it = vocab.find(content); it != vocab.end()) {
      id = it->get<int64_t>();
    } else {  // a new id after the model's and the added ones, as the package assigns it
      id = model_size;
      for (const auto& a : added_) id = std::max(id, a.id + 1);
    }
    added_.push_back({content, id, normalized});
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
  bos_id_ = find_added(names[0])->id;
  eos_id_ = find_added(names[1])->id;
  for (const auto& a : added_) {
    auto& pass =
        passes_[a.normalized ? 1 : 0].by_first_byte[static_cast<unsigned char>(a.content.empty() ? 0 : a.content[0])];
    if (!a.content.empty()) pass.push_back(&a);
  }
  for (auto& pass : passes_)
    for (auto& list : pass.by_first_byte)
      std::stable_sort(list.begin(), list.end(),
                       [](auto* a, auto* b) { return a->content.size() > b->content.size(); });

  // Post-processor: the single-sequence template's tokens around the text.
  std::function<void(const json&, const std::string&)> add_processor = [&](const json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = f.type(p, where + ".");
    if (type == "Sequence") {
      const json& list = f.get(p, "processors", where + ".");
      for (size_t i = 0; i < list.size(); ++i) add_processor(list[i], where + ".processors[" + std::to_string(i) + "]");
    } else if (type == "TemplateProcessing") {
      const json& special = f.get(p, "special_tokens", where + ".");
      std::vector<int64_t> before, after;
      bool seen_text = false;
      for (const json& piece : f.get(p, "single", where + ".")) {
        if (piece.contains("Sequence")) {
          seen_text = true;
        } else {
          const std::string name =
              f.get(f.get(piece, "SpecialToken", where + ".single[]."), "id", where + ".single[].SpecialToken.")
                  .get<std::string>();
          const json& ids =
              f.get(f.get(special, name, where + ".special_tokens."), "ids", where + ".special_tokens." + name + ".");
          for (const json& id : ids) (seen_text ? after : before).push_back(id.get<int64_t>());
        }
      }
      template_before_.insert(template_before_.begin(), before.begin(), before.end());
      template_after_.insert(template_after_.end(), after.begin(), after.end());
    } else if (type != "ByteLevel") {  // ByteLevel only trims offsets, which have no ids
      f.unsupported(where + ".type", "'" + type + "'", "TemplateProcessing, ByteLevel, Sequence, null");
    }
  };
  if (root.contains("post_processor")) add_processor(root["post_processor"], "post_processor");

  // Decode table; the vocabulary size covers every id.
  int64_t size = 0;
  for (const auto& [token, id] : tokens) size = std::max(size, id + 1);
  for (const auto& a : added_) size = std::max(size, a.id + 1);
  for (int64_t id : template_before_) size = std::max(size, id + 1);
  for (int64_t id : template_after_) size = std::max(size, id + 1);
  token_bytes_.assign(static_cast<size_t>(size), "");
  known_.assign(static_cast<size_t>(size), false);
  for (const auto& [token, id] : tokens) token_bytes_[id] = decoded_bytes(token), known_[id] = true;
  for (const auto& a : added_) token_bytes_[a.id] = decoded_bytes(a.content), known_[a.id] = true;
  const auto empty = encode_with_template("");
  adds_bos_ = std::find(empty.begin(), empty.end(), bos_id_) != empty.end();
  adds_eos_ = std::find(empty.begin(), empty.end(), eos_id_) != empty.end();
}

std::vector<int64_t> HfTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (bos && !adds_bos_) ids.push_back(bos_id_);
  auto body = encode_with_template(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (eos && !adds_eos_) ids.push_back(eos_id_);
  return ids;
}

std::vector<int64_t> HfTokenizer::encode_with_template(std::string_view text) const {
  std::vector<int64_t> ids(template_before_);
  split_added(text, 0, &ids);
  ids.insert(ids.end(), template_after_.begin(), template_after_.end());
  return ids;
}

// Leftmost-longest added tokens of this pass; the text between them goes to the next pass.
void HfTokenizer::split_added(std::string_view text, size_t pass, std::vector<int64_t>* out) const {
  auto rest = [&](std::string_view piece) {
    if (pass == 0) return split_added(piece, 1, out);
    pre_tokenize(0, piece, out);
  };
  const auto& index = passes_[pass].by_first_byte;
  size_t gap = 0;
  for (size_t pos = 0; pos < text.size(); ++pos) {
    const auto& candidates = index[static_cast<unsigned char>(text[pos])];
    for (const AddedToken* token : candidates) {
      if (text.compare(pos, token->content.size(), token->content) != 0) continue;
      if (pos > gap) rest(text.substr(gap, pos - gap));
      out->push_back(token->id);
      gap = pos + token->content.size();
      pos = gap - 1;
      break;
    }
  }
  if (gap < text.size()) rest(text.substr(gap));
}

void HfTokenizer::pre_tokenize(size_t step, std::string_view piece, std::vector<int64_t>* out) const {
  if (piece.empty()) return;
  if (step == steps_.size()) return model_->encode(piece, out);
  if (const auto& split = steps_[step].split)
    return split->split(piece, [&](std::string_view sub) { pre_tokenize(step + 1, sub, out); });
  if (piece.front() == ' ') return pre_tokenize(step + 1, piece, out);  // ByteLevel's add_prefix_space
  const std::string spaced = " " + std::string(piece);
  pre_tokenize(step + 1, spaced, out);
}

std::string HfTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string text;
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size() || !known_[static_cast<size_t>(id)])
      throw std::invalid_argument("tokenizer " + path_ + " has no token id " + std::to_string(id));
    text += token_bytes_[static_cast<size_t>(id)];
  }
  return text;
}

}  // namespace titan
