#include "trainer/sentencepiece_tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>

namespace titan {
namespace {

namespace fs = std::filesystem;

// The shim's entry points (trainer/sentencepiece_shim.cpp).
struct SpmApi {
  void* (*load)(const char*, char*, size_t);
  void (*free)(void*);
  int (*piece_size)(void*);
  int (*bos_id)(void*);
  int (*eos_id)(void*);
  int (*encode)(void*, const char*, size_t, void (*)(void*, const int*, size_t), void*);
  int (*decode)(void*, const int*, size_t, void (*)(void*, const char*, size_t), void*);
};

std::string shim_path() {
  if (const char* env = std::getenv("TITAN_SENTENCEPIECE_SHIM")) return env;
  std::error_code ec;
  auto exe_dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const auto& dir : {exe_dir, exe_dir.parent_path()})
    if (fs::exists(dir / "libtitan_sentencepiece.so")) return (dir / "libtitan_sentencepiece.so").string();
  return TITAN_SENTENCEPIECE_SHIM;  // where the build put it
}

const SpmApi& api() {
  static const SpmApi table = [] {
    const std::string path = shim_path();
    // DEEPBIND + LOCAL: sentencepiece resolves protobuf inside its own copy and leaks nothing.
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!lib) throw std::runtime_error("cannot load the sentencepiece shim " + path + ": " + dlerror());
    auto sym = [&](const char* name) {
      void* p = dlsym(lib, name);
      if (!p) throw std::runtime_error(std::string("sentencepiece shim lacks ") + name);
      return p;
    };
    SpmApi a;
    a.load = reinterpret_cast<decltype(a.load)>(sym("titan_spm_load"));
    a.free = reinterpret_cast<decltype(a.free)>(sym("titan_spm_free"));
    a.piece_size = reinterpret_cast<decltype(a.piece_size)>(sym("titan_spm_piece_size"));
    a.bos_id = reinterpret_cast<decltype(a.bos_id)>(sym("titan_spm_bos_id"));
    a.eos_id = reinterpret_cast<decltype(a.eos_id)>(sym("titan_spm_eos_id"));
    a.encode = reinterpret_cast<decltype(a.encode)>(sym("titan_spm_encode"));
    a.decode = reinterpret_cast<decltype(a.decode)>(sym("titan_spm_decode"));
    return a;
  }();
  return table;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& assets_path) {
  path_ = (fs::path(assets_path) / "tokenizer.model").string();
  if (!fs::exists(path_))
    throw std::invalid_argument("model.hf_assets_path '" + assets_path +
                                "' holds no tokenizer.model (a sentencepiece model; ./scripts/setup.sh builds the bundled one)");
  char error[512] = {0};
  handle_ = api().load(path_.c_str(), error, sizeof(error));
  if (!handle_) throw std::invalid_argument("cannot load tokenizer " + path_ + ": " + error);
  vocab_size_ = api().piece_size(handle_);
  bos_id_ = api().bos_id(handle_);
  eos_id_ = api().eos_id(handle_);
  if (bos_id_ < 0 || eos_id_ < 0) throw std::invalid_argument("tokenizer " + path_ + " has no BOS or EOS piece");
}

SentencePieceTokenizer::~SentencePieceTokenizer() {
  if (handle_) api().free(handle_);
}

std::vector<int64_t> SentencePieceTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int64_t> out;
  if (bos) out.push_back(bos_id_);
  auto sink = [](void* ctx, const int* ids, size_t n) { static_cast<std::vector<int64_t>*>(ctx)->insert(static_cast<std::vector<int64_t>*>(ctx)->end(), ids, ids + n); };
  if (api().encode(handle_, text.data(), text.size(), sink, &out) != 0) throw std::runtime_error("tokenizer " + path_ + ": encoding failed");
  if (eos) out.push_back(eos_id_);
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int> narrow(ids.begin(), ids.end());
  std::string text;
  auto sink = [](void* ctx, const char* s, size_t n) { static_cast<std::string*>(ctx)->assign(s, n); };
  if (api().decode(handle_, narrow.data(), narrow.size(), sink, &text) != 0) throw std::runtime_error("tokenizer " + path_ + ": decoding failed");
  return text;
}

}  // namespace titan
