// TorchTitan's non-tensor checkpoint items (DCP keys such as train_state.step,
// lr_scheduler.last_epoch, optimizer.param_groups.<fqn>.eps) <-> our parts' state (TORCHTITAN.md §2.2).
// TorchTitan's dataloader state (a pickled StatefulDataLoader per dp rank) has no counterpart in our
// global data cursor, and ours none in it: neither direction maps it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "models/common/torch_api.h"

namespace titan::dcp {

// Our state by part ("model", and "train_state", "lr_scheduler", "optimizer" where the items hold
// them) from TorchTitan's items by key. Throws std::runtime_error naming the key and `where` for an
// item of the wrong type.
nlohmann::json state_from_items(const nlohmann::json& items, const std::string& where);

// TorchTitan's items from our state by part; `fqns` are the parameters with optimizer state.
std::vector<std::pair<std::string, c10::IValue>> items_from_state(const nlohmann::json& state,
                                                                  const std::vector<std::string>& fqns);

}  // namespace titan::dcp
