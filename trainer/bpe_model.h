// Byte-pair encoding of one pre-token, as the `tokenizers` package's BPE model does it: start from
// single bytes, repeatedly apply the lowest-ranked merge (leftmost first among equal ranks).
// Results are cached per thread by pre-token.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace titan {

struct BpeOptions {
  int64_t unk_id = -1;         // emitted for a byte with no token (-1: the byte is dropped, as the package does)
  bool fuse_unk = false;       // consecutive unknown bytes give one unk_id
  bool ignore_merges = false;  // a whole pre-token found in the vocabulary is emitted directly
};

class BpeModel {
 public:
  // `vocab`: token bytes -> id. `merges`: (left id, right id) in rank order with the id of their
  // concatenation.
  BpeModel(std::unordered_map<std::string, int64_t> vocab,
           const std::vector<std::pair<std::pair<int64_t, int64_t>, int64_t>>& merges, BpeOptions options);

  // Appends the ids of `word` (raw bytes) to *out.
  void encode(std::string_view word, std::vector<int64_t>* out) const;

 private:
  void merge(std::string_view word, std::vector<int64_t>* out) const;

  struct Merge {
    int32_t rank;
    int64_t id;
  };
  static uint64_t key(int64_t a, int64_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  std::unordered_map<std::string, int64_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  int64_t byte_id_[256];
  BpeOptions options_;
  uint64_t instance_;  // tells this model's cache entries from another's in a thread's cache
};

}  // namespace titan
