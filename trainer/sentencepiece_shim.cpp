// A C interface to libsentencepiece, built as its own shared module and loaded with
// RTLD_LOCAL | RTLD_DEEPBIND. Debian's libsentencepiece carries a private protobuf 3.14 whose
// exported symbols clash with the protobuf 3.21 that libtorch loads: linked directly, the process
// crashes before main(). Isolated like this, each library keeps its own protobuf.
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {

// Returns a handle, or nullptr with the reason in `error` (at most error_len bytes).
void* titan_spm_load(const char* path, char* error, size_t error_len) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto status = sp->Load(path);
  if (!status.ok()) {
    std::strncpy(error, status.ToString().c_str(), error_len - 1);
    error[error_len - 1] = '\0';
    delete sp;
    return nullptr;
  }
  return sp;
}

void titan_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

int titan_spm_piece_size(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize(); }
int titan_spm_bos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->bos_id(); }
int titan_spm_eos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->eos_id(); }

// Encodes `text` (len bytes). Calls `sink(ctx, ids, n)` once with the ids; returns 0 on success.
int titan_spm_encode(void* handle, const char* text, size_t len, void (*sink)(void*, const int*, size_t), void* ctx) {
  std::vector<int> ids;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, len), &ids);
  if (!status.ok()) return 1;
  sink(ctx, ids.data(), ids.size());
  return 0;
}

// Decodes ids into text; calls `sink(ctx, text, len)`. Returns 0 on success.
int titan_spm_decode(void* handle, const int* ids, size_t n, void (*sink)(void*, const char*, size_t), void* ctx) {
  std::string text;
  auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + n), &text);
  if (!status.ok()) return 1;
  sink(ctx, text.data(), text.size());
  return 0;
}
}
