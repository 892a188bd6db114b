#include "trainer/document_source.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>

#include "trainer/tokenizer.h"

namespace titan {
namespace {

namespace fs = std::filesystem;
using Err = std::invalid_argument;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string strip_gz(const std::string& name) { return ends_with(name, ".gz") ? name.substr(0, name.size() - 3) : name; }

bool is_json_name(const std::string& name) {
  auto n = strip_gz(name);
  return ends_with(n, ".jsonl") || ends_with(n, ".json");
}
bool is_text_name(const std::string& name) { return ends_with(strip_gz(name), ".txt"); }
bool is_npy_name(const std::string& name) { return ends_with(name, ".npy"); }

bool is_blank(const std::string& line) {
  return std::all_of(line.begin(), line.end(), [](unsigned char ch) { return std::isspace(ch); });
}

// Line reader over plain or gzip files (zlib reads both).
class LineReader {
 public:
  explicit LineReader(const std::string& path) : path_(path) {
    file_ = gzopen(path.c_str(), "rb");
    if (!file_) throw Err("cannot open dataset file '" + path + "': " + std::strerror(errno));
    gzbuffer(file_, 1 << 17);
  }
  ~LineReader() {
    if (file_) gzclose(file_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool getline(std::string& line) {
    line.clear();
    char buf[1 << 16];
    while (gzgets(file_, buf, sizeof(buf))) {
      line += buf;
      if (!line.empty() && line.back() == '\n') {
        line.pop_back();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        ++line_no_;
        return true;
      }
    }
    int err = 0;
    const char* msg = gzerror(file_, &err);
    if (err != Z_OK && err != Z_BUF_ERROR) throw Err("cannot read dataset file '" + path_ + "': " + msg);
    if (line.empty()) return false;
    ++line_no_;
    return true;
  }
  int64_t line_no() const { return line_no_; }

 private:
  std::string path_;
  gzFile file_ = nullptr;
  int64_t line_no_ = 0;
};

// Text and JSON-lines files, one after the other; each document tokenized with BOS and EOS.
class TextSource : public DocumentSource {
 public:
  TextSource(std::vector<std::string> files, std::string root, const Tokenizer* tokenizer)
      : files_(std::move(files)), root_(std::move(root)), tokenizer_(tokenizer) {
    if (!tokenizer_) throw Err("dataset '" + root_ + "' is text: it needs a tokenizer (model.hf_assets_path)");
  }

  bool next(std::vector<int64_t>* tokens) override {
    std::string text;
    if (!next_text(&text)) return false;
    if (tokens) *tokens = encode_document(*tokenizer_, text);
    return true;
  }

  bool next_text(std::string* text) override {
    while (true) {
      if (!reader_) {
        if (file_index_ >= files_.size()) return false;
        open_file(files_[file_index_]);
      }
      if (read_document(*text)) return true;
      reader_.reset();
      ++file_index_;
    }
  }

  void rewind() override {
    reader_.reset();
    file_index_ = 0;
  }

  std::string describe() const override { return root_; }

 private:
  void open_file(const std::string& path) {
    json_ = is_json_name(path);
    paragraphs_ = !json_ && has_blank_line(path);
    reader_ = std::make_unique<LineReader>(path);
  }

  // A text file is read as paragraph blocks when a blank line appears in its first 64 KiB,
  // else as one document per line.
  static bool has_blank_line(const std::string& path) {
    LineReader sniff(path);
    std::string line;
    size_t bytes = 0;
    bool seen_text = false;
    while (bytes < (1 << 16) && sniff.getline(line)) {
      bytes += line.size() + 1;
      if (is_blank(line)) {
        if (seen_text) return true;
      } else {
        seen_text = true;
      }
    }
    return false;
  }

  bool read_document(std::string& text) {
    std::string line;
    if (json_) {
      while (reader_->getline(line)) {
        if (is_blank(line)) continue;
        nlohmann::json doc;
        try {
          doc = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
          throw Err(where() + ": invalid JSON (" + std::string(e.what()) + ")");
        }
        if (!doc.is_object() || !doc.contains("text") || !doc["text"].is_string())
          throw Err(where() + ": a JSON line needs a string \"text\" field");
        text = doc["text"].get<std::string>();
        return true;
      }
      return false;
    }
    if (!paragraphs_) {
      while (reader_->getline(line))
        if (!is_blank(line)) return text = line, true;
      return false;
    }
    text.clear();
    while (reader_->getline(line)) {
      if (is_blank(line)) {
        if (!text.empty()) return true;
        continue;
      }
      text += (text.empty() ? "" : "\n") + line;
    }
    return !text.empty();
  }

  std::string where() const { return files_[file_index_] + ":" + std::to_string(reader_->line_no()); }

  std::vector<std::string> files_;
  std::string root_;
  const Tokenizer* tokenizer_;
  size_t file_index_ = 0;
  std::unique_ptr<LineReader> reader_;
  bool json_ = false, paragraphs_ = false;
};

// A 1-D .npy array of token ids, served in fixed-size chunks (no BOS/EOS added).
class NpySource : public DocumentSource {
 public:
  explicit NpySource(std::string path) : path_(std::move(path)) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) throw Err("cannot open dataset file '" + path_ + "'");
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Err(path_ + ": not a .npy file");
    const int major = static_cast<unsigned char>(magic[6]);
    uint32_t header_len = 0;
    if (major == 1) {
      unsigned char b[2];
      in.read(reinterpret_cast<char*>(b), 2);
      header_len = b[0] | (b[1] << 8);
    } else {
      unsigned char b[4];
      in.read(reinterpret_cast<char*>(b), 4);
      header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    }
    std::string header(header_len, '\0');
    if (!in.read(header.data(), header_len)) throw Err(path_ + ": truncated .npy header");
    data_offset_ = static_cast<int64_t>(in.tellg());

    std::smatch m;
    if (!std::regex_search(header, m, std::regex("'descr':\\s*'([<>|=]?)([a-z])(\\d+)'")))
      throw Err(path_ + ": .npy header has no dtype");
    const std::string order = m[1], kind = m[2];
    item_size_ = std::stoi(m[3]);
    if (order == ">") throw Err(path_ + ": big-endian .npy is not supported");
    dtype_ = kind + std::to_string(item_size_);
    if (dtype_ != "u2" && dtype_ != "i4" && dtype_ != "u4" && dtype_ != "i8")
      throw Err(path_ + ": .npy dtype '" + kind + std::to_string(item_size_) +
                "' is not a token type (valid: uint16, int32, uint32, int64)");
    if (std::regex_search(header, std::regex("'fortran_order':\\s*True")))
      throw Err(path_ + ": Fortran-ordered .npy is not supported");
    if (!std::regex_search(header, m, std::regex("'shape':\\s*\\((\\d+),?\\s*\\)")))
      throw Err(path_ + ": .npy array must be 1-D (a flat array of token ids)");
    count_ = std::stoll(m[1]);
    in.seekg(0, std::ios::end);
    const int64_t file_size = static_cast<int64_t>(in.tellg());
    if (file_size < data_offset_ + count_ * item_size_)
      throw Err(path_ + ": .npy file is truncated (" + std::to_string(count_) + " tokens declared)");
    file_.open(path_, std::ios::binary);
  }

  bool next(std::vector<int64_t>* tokens) override {
    if (pos_ >= count_) return false;
    const int64_t n = std::min<int64_t>(kChunk, count_ - pos_);
    if (tokens) {
      std::vector<char> raw(static_cast<size_t>(n * item_size_));
      file_.seekg(data_offset_ + pos_ * item_size_);
      if (!file_.read(raw.data(), static_cast<std::streamsize>(raw.size()))) throw Err(path_ + ": read failed");
      tokens->resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) (*tokens)[i] = decode(raw.data() + i * item_size_);
    }
    pos_ += n;
    return true;
  }

  void rewind() override { pos_ = 0; }
  std::string describe() const override { return path_; }
  bool pretokenized() const override { return true; }

 private:
  static constexpr int64_t kChunk = 1 << 16;

  int64_t decode(const char* p) const {  // little-endian, as numpy writes on every common machine
    if (dtype_ == "u2") { uint16_t v; std::memcpy(&v, p, 2); return v; }
    if (dtype_ == "i4") { int32_t v; std::memcpy(&v, p, 4); return v; }
    if (dtype_ == "u4") { uint32_t v; std::memcpy(&v, p, 4); return v; }
    int64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }

  std::string path_, dtype_;
  std::ifstream file_;
  int64_t data_offset_ = 0, count_ = 0, item_size_ = 0, pos_ = 0;
};

}  // namespace

bool DocumentSource::next_text(std::string*) {
  throw Err("'" + describe() + "' holds token ids, not text");
}

std::vector<int64_t> encode_document(const Tokenizer& tokenizer, const std::string& text) {
  return tokenizer.encode(text, /*bos=*/true, /*eos=*/true);
}

bool is_pretokenized_path(const std::string& path) { return is_npy_name(path); }

std::unique_ptr<DocumentSource> open_document_source(const std::string& path, const Tokenizer* tokenizer) {
  if (!fs::exists(path)) throw Err("dataset path '" + path + "' does not exist");
  if (is_npy_name(path)) return std::make_unique<NpySource>(path);
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    std::vector<std::string> token_files;  // pre-tokenized .npy files are read one at a time, not from a folder
    for (const auto& entry : fs::directory_iterator(path)) {
      const auto name = entry.path().string();
      if (entry.is_regular_file() && (is_json_name(name) || is_text_name(name))) files.push_back(name);
      if (entry.is_regular_file() && is_npy_name(name)) token_files.push_back(entry.path().filename().string());
    }
    std::sort(files.begin(), files.end());
    std::sort(token_files.begin(), token_files.end());
    if (!token_files.empty())
      throw Err("dataset folder '" + path + "' holds .npy token files (" + token_files.front() +
                (token_files.size() > 1 ? ", ..." : "") + "), which would not be read: give one .npy file as " +
                "training.dataset_path, or a folder of text (.txt, .jsonl, .json, .json.gz) only");
    if (files.empty()) throw Err("dataset folder '" + path + "' holds no .txt, .jsonl, .json or .json.gz file");
  } else if (is_json_name(path) || is_text_name(path)) {
    files.push_back(path);
  } else {
    throw Err("dataset file '" + path + "' has an unknown type (valid: .txt, .jsonl, .json, .json.gz, .txt.gz, .npy)");
  }
  return std::make_unique<TextSource>(std::move(files), path, tokenizer);
}

}  // namespace titan
