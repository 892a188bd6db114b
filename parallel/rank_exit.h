// Why a rank left, told to the other ranks through the store: a peer whose collective then fails
// on a closed connection names the rank and its error instead of Gloo's "Connection closed by peer".
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstdint>
#include <string>

namespace titan {

// Where this rank's notes go (the Collectives' store), once its ranks have met.
void set_rank_exit_store(c10::intrusive_ptr<c10d::Store> store, int64_t rank, int64_t world_size);
// The step under way, for the note ("during start-up" before step 1).
void set_rank_exit_step(int64_t step);
// The leaving rank, before it exits: "rank R exited during start-up|at step N: reason".
void announce_rank_exit(const std::string& reason);
// Another rank's note, "" if none (or the store is gone with rank 0).
std::string rank_exit_note();

}  // namespace titan
