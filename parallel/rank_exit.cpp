#include "parallel/rank_exit.h"

#include <chrono>
#include <mutex>
#include <thread>

namespace titan {
namespace {

struct RankExit {
  std::mutex mutex;
  c10::intrusive_ptr<c10d::Store> store;
  int64_t rank = 0, world_size = 1, step = 0;
};

RankExit& state() {
  static RankExit s;
  return s;
}

std::string key(int64_t rank) { return "titan_rank_exit/" + std::to_string(rank); }

}  // namespace

void set_rank_exit_store(c10::intrusive_ptr<c10d::Store> store, int64_t rank, int64_t world_size) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().store = std::move(store), state().rank = rank, state().world_size = world_size;
}

void set_rank_exit_step(int64_t step) { state().step = step; }

void announce_rank_exit(const std::string& reason) {
  std::lock_guard<std::mutex> lock(state().mutex);
  auto& s = state();
  if (!s.store) return;
  const std::string when = s.step == 0 ? "during start-up" : "at step " + std::to_string(s.step);
  const std::string note = "rank " + std::to_string(s.rank) + " exited " + when + ": " + reason;
  try {
    s.store->set(key(s.rank), std::vector<uint8_t>(note.begin(), note.end()));
  } catch (const std::exception&) {  // the store left with rank 0: nobody to tell
  }
}

std::string rank_exit_note() {
  std::lock_guard<std::mutex> lock(state().mutex);
  auto& s = state();
  if (!s.store) return "";
  try {
    // The leaving rank's connections close as it unwinds, just before it writes its note.
    for (int attempt = 0; attempt < 30; ++attempt) {
      for (int64_t r = 0; r < s.world_size; ++r) {
        if (r == s.rank || !s.store->check({key(r)})) continue;
        const auto note = s.store->get(key(r));
        return std::string(note.begin(), note.end());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  } catch (const std::exception&) {  // the store left with rank 0
  }
  return "";
}

}  // namespace titan
