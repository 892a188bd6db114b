#include "checkpoint/dcp_state.h"

#include <optional>
#include <stdexcept>

namespace titan::dcp {
namespace {

using Err = std::runtime_error;
using json = nlohmann::json;

int64_t as_int(const json& items, const std::string& key, const std::string& where) {
  const json& v = items.at(key);
  if (!v.is_number_integer()) throw Err(where + ": item '" + key + "' is " + v.dump() + ", expected an int");
  return v.get<int64_t>();
}

double as_number(const json& items, const std::string& key, const std::string& where) {
  const json& v = items.at(key);
  if (!v.is_number()) throw Err(where + ": item '" + key + "' is " + v.dump() + ", expected a number");
  return v.get<double>();
}

// A plain Python list of floats: c10::List<double> pickles through TorchScript's build_doublelist,
// which torch.load(weights_only=True) refuses.
c10::IValue float_list(const std::vector<double>& values) {
  c10::impl::GenericList list(c10::AnyType::get());
  for (double v : values) list.push_back(v);
  return list;
}

}  // namespace

json state_from_items(const json& items, const std::string& where) {
  json state = {{"model", json::object()}};
  auto has = [&](const std::string& key) { return items.contains(key); };
  if (has("train_state.step"))
    state["train_state"] = {
        {"step", as_int(items, "train_state.step", where)},
        {"ntokens_seen", has("train_state.ntokens_seen") ? as_int(items, "train_state.ntokens_seen", where) : 0}};
  if (has("lr_scheduler.base_lrs") && has("lr_scheduler.last_epoch")) {
    const json& base = items.at("lr_scheduler.base_lrs");
    if (!base.is_array() || base.empty() || !base[0].is_number())
      throw Err(where + ": item 'lr_scheduler.base_lrs' is " + base.dump() + ", expected a list of numbers");
    state["lr_scheduler"] = {{"base_lr", base[0]}, {"last_epoch", as_int(items, "lr_scheduler.last_epoch", where)}};
    const json last = items.value("lr_scheduler._last_lr", json());  // kept for a later to-dcp
    if (last.is_array() && !last.empty() && last[0].is_number()) state["lr_scheduler"]["last_lr"] = last[0];
  }
  // optimizer.param_groups.<fqn>.<field>: one group in TorchTitan; any parameter's copy serves.
  const std::string prefix = "optimizer.param_groups.";
  for (const auto& [key, v] : items.items()) {
    if (key.rfind(prefix, 0) != 0 || key.size() < 4 || key.compare(key.size() - 4, 4, ".eps") != 0) continue;
    const std::string group = key.substr(0, key.size() - 4);
    json g = {{"eps", as_number(items, key, where)}, {"decoupled", true}};
    if (items.contains(group + ".betas")) g["betas"] = items.at(group + ".betas");
    if (items.contains(group + ".weight_decay")) g["weight_decay"] = items.at(group + ".weight_decay");
    state["optimizer"] = {{"param_groups", g}};
    break;
  }
  return state;
}

std::vector<std::pair<std::string, c10::IValue>> items_from_state(const json& state,
                                                                  const std::vector<std::string>& fqns) {
  std::vector<std::pair<std::string, c10::IValue>> out;
  if (state.contains("train_state")) {
    const json& t = state["train_state"];
    out.emplace_back("train_state.step", t.at("step").get<int64_t>());
    out.emplace_back("train_state.ntokens_seen", t.value("ntokens_seen", int64_t{0}));
  }
  // torch 2.11's LambdaLR.state_dict() and AdamW's param group, key for key: TorchTitan loads with
  // DCP's strict planner, which refuses a checkpoint that lacks any of them.
  std::optional<double> last_lr, base_lr;
  if (state.contains("lr_scheduler")) {
    const json& l = state["lr_scheduler"];
    const int64_t last_epoch = l.at("last_epoch").get<int64_t>();
    base_lr = l.at("base_lr").get<double>();
    if (l.contains("last_lr")) last_lr = l["last_lr"].get<double>();  // older checkpoints lack it
    out.emplace_back("lr_scheduler.base_lrs", float_list({*base_lr}));
    out.emplace_back("lr_scheduler.last_epoch", last_epoch);
    out.emplace_back("lr_scheduler._step_count", last_epoch + 1);  // LambdaLR counts its constructor's step
    out.emplace_back("lr_scheduler._is_initial", false);
    out.emplace_back("lr_scheduler._get_lr_called_within_step", false);
    if (last_lr) out.emplace_back("lr_scheduler._last_lr", float_list({*last_lr}));
    c10::impl::GenericList lambdas(c10::AnyType::get());  // [None]: a lambda is not saved
    lambdas.push_back(c10::IValue());
    out.emplace_back("lr_scheduler.lr_lambdas", lambdas);
  }
  if (state.contains("optimizer") && state["optimizer"].contains("param_groups")) {
    // One group for every parameter: its values, then a copy of them under each parameter's name.
    const json& g = state["optimizer"]["param_groups"];
    std::vector<std::pair<std::string, c10::IValue>> group;
    if (last_lr) group.emplace_back("lr", *last_lr);
    if (g.contains("betas")) {  // a tuple, as torch.optim keeps it
      const auto betas = g["betas"].get<std::vector<double>>();
      group.emplace_back("betas", c10::ivalue::Tuple::create(std::vector<c10::IValue>(betas.begin(), betas.end())));
    }
    if (g.contains("eps")) group.emplace_back("eps", g["eps"].get<double>());
    if (g.contains("weight_decay")) group.emplace_back("weight_decay", g["weight_decay"].get<double>());
    for (const char* off : {"amsgrad", "maximize", "capturable", "differentiable"}) group.emplace_back(off, false);
    group.emplace_back("foreach", c10::IValue());  // TorchTitan's default implementation: fused
    group.emplace_back("fused", true);
    group.emplace_back("decoupled_weight_decay", g.value("decoupled", true));
    if (base_lr) group.emplace_back("initial_lr", *base_lr);
    for (const auto& fqn : fqns)
      for (const auto& [name, value] : group) out.emplace_back("optimizer.param_groups." + fqn + "." + name, value);
  }
  return out;
}

}  // namespace titan::dcp
