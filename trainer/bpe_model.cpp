#include "trainer/bpe_model.h"

#include <atomic>
#include <queue>

namespace titan {
namespace {

std::atomic<uint64_t> next_instance{1};

// The thread's memo of pre-token -> ids; emptied when full or when another model uses the thread.
struct Cache {
  static constexpr size_t kCapacity = 1 << 18;
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int64_t>> ids;
};

}  // namespace

BpeModel::BpeModel(std::unordered_map<std::string, int64_t> vocab,
                   const std::vector<std::pair<std::pair<int64_t, int64_t>, int64_t>>& merges, BpeOptions options)
    : vocab_(std::move(vocab)), options_(options), instance_(next_instance++) {
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(std::string(1, static_cast<char>(b)));
    byte_id_[b] = it == vocab_.end() ? -1 : it->second;
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [pair, id] = merges[rank];
    merges_.emplace(key(pair.first, pair.second), Merge{static_cast<int32_t>(rank), id});  // the first rank wins
  }
}

void BpeModel::encode(std::string_view word, std::vector<int64_t>* out) const {
  if (word.size() == 1 && byte_id_[static_cast<unsigned char>(word[0])] >= 0)
    return out->push_back(byte_id_[static_cast<unsigned char>(word[0])]);
  thread_local Cache cache;
  if (cache.owner != instance_ || cache.ids.size() >= Cache::kCapacity) {
    cache.ids.clear();
    cache.owner = instance_;
  }
  auto [it, fresh] = cache.ids.try_emplace(std::string(word));
  if (fresh) {
    auto whole = options_.ignore_merges ? vocab_.find(it->first) : vocab_.end();
    if (whole != vocab_.end()) {
      it->second.push_back(whole->second);
    } else {
      merge(word, &it->second);
    }
  }
  out->insert(out->end(), it->second.begin(), it->second.end());
}

void BpeModel::merge(std::string_view word, std::vector<int64_t>* out) const {
  // Symbols in a linked list; a merge keeps the left one and unlinks the right one.
  struct Symbol {
    int64_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  for (unsigned char byte : word) {
    int64_t id = byte_id_[byte];
    if (id < 0) {
      if (options_.unk_id < 0) continue;
      if (options_.fuse_unk && !sym.empty() && sym.back().id == options_.unk_id) continue;
      id = options_.unk_id;
    }
    const auto n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, n + 1, true});
  }
  if (!sym.empty()) sym.back().next = -1;

  struct Candidate {
    int32_t rank, pos;
    int64_t id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    auto m = merges_.find(key(sym[pos].id, sym[next].id));
    if (m != merges_.end()) queue.push({m->second.rank, pos, m->second.id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    // Stale when either side changed since it was queued.
    auto m = merges_.find(key(left.id, sym[left.next].id));
    if (m == merges_.end() || m->second.id != top.id || m->second.rank != top.rank) continue;
    Symbol& right = sym[left.next];
    right.alive = false;
    left.id = top.id;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

}  // namespace titan
