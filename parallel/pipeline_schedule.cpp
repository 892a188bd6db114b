#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <cctype>
#include <deque>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <tuple>

namespace titan {
namespace {

using Err = std::invalid_argument;
using Op = PipelineOp;

const char* op_name(Op op) {
  switch (op) {
    case Op::kForward: return "F";
    case Op::kBackward: return "B";
    case Op::kBackwardInput: return "I";
    case Op::kBackwardWeight: return "W";
    case Op::kSendF: return "SEND_F";
    case Op::kRecvF: return "RECV_F";
    case Op::kSendB: return "SEND_B";
    case Op::kRecvB: return "RECV_B";
  }
  return "?";
}

bool is_backward(Op op) { return op == Op::kBackward || op == Op::kBackwardInput; }  // sends a gradient upstream

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string str(int64_t v) { return std::to_string(v); }

// Interleaved1F1B and InterleavedZeroBubble (PyTorch's _get_1f1b_rank_ops with its warm-up): the
// rank's stages take turns in rounds of microbatches_per_round; warm-up forwards, then one forward
// and one backward each, then the remaining backwards; zero bubble issues I for B and adds the W
// steps once `rank` 1F1B steps have passed, the rest at the end.
std::vector<PipelineAction> interleaved_rank_ops(int64_t rank, int64_t pp, int64_t n_local, int64_t n, bool zero_bubble) {
  const int64_t rounds = std::max<int64_t>(1, n / pp);
  if (n % rounds != 0)
    throw Err(std::string(zero_bubble ? "Zero bubble" : "Interleaved 1F1B") +
              " requires the number of microbatches to be a multiple of the number of rounds (" + str(rounds) +
              "), but got " + str(n) + ".");
  const int64_t per_round = n / rounds;
  const int64_t factor = zero_bubble ? 1 : 2;
  const int64_t warmup = std::min((n_local - 1) * per_round + factor * (pp - 1 - rank), n * n_local);
  const int64_t fwd_bwd = n * n_local - warmup, total = warmup + fwd_bwd + warmup;
  auto forward_stage = [&](int64_t step) { return (step / per_round) % n_local * pp + rank; };
  auto backward_stage = [&](int64_t step) { return (n_local - 1 - (step - warmup) / per_round % n_local) * pp + rank; };
  const Op backward = zero_bubble ? Op::kBackwardInput : Op::kBackward;
  const int64_t weight_delay = zero_bubble ? rank : 0;  // PyTorch's num_1f1b_microbatches
  std::map<std::pair<int64_t, Op>, int64_t> next_mb;    // (stage, op) -> its next microbatch
  std::vector<PipelineAction> ops;
  auto add = [&](int64_t stage, Op op) { ops.push_back({stage, op, next_mb[{stage, op}]++}); };
  std::vector<int64_t> backward_steps;
  size_t weights_done = 0;
  for (int64_t step = 0; step < total; ++step) {
    if (step < warmup + fwd_bwd) add(forward_stage(step), Op::kForward);
    if (step < warmup) continue;
    add(backward_stage(step), backward);
    backward_steps.push_back(step);
    if (zero_bubble && step - warmup >= weight_delay) add(backward_stage(backward_steps[weights_done++]), Op::kBackwardWeight);
  }
  while (zero_bubble && weights_done < backward_steps.size()) add(backward_stage(backward_steps[weights_done++]), Op::kBackwardWeight);
  return ops;
}

// ZBVZeroBubble (PyTorch's ScheduleZBVZeroBubble): chunk 0 is stage `rank`, chunk 1 stage
// 2 pp - 1 - rank; runs max(2 pp - 1, n) microbatches and drops those past n.
std::vector<PipelineAction> zbv_rank_ops(int64_t rank, int64_t pp, int64_t n) {
  const int64_t n_micro = std::max(2 * pp - 1, n), s0 = rank, s1 = 2 * pp - 1 - rank;
  int64_t f0 = 0, f1 = 0, b0 = 0, b1 = 0;
  std::vector<PipelineAction> ops;
  auto add = [&](int64_t stage, Op op, int64_t& counter) { ops.push_back({stage, op, counter++}); };
  auto input_then_weight = [&](int64_t stage, int64_t& counter) {  // I and W of one microbatch
    ops.push_back({stage, Op::kBackwardInput, counter});
    add(stage, Op::kBackwardWeight, counter);
  };
  for (int64_t i = 0; i < 2 * (pp - rank) - 1; ++i) add(s0, Op::kForward, f0);
  for (int64_t i = 0; i < rank; ++i) {
    add(s1, Op::kForward, f1);
    add(s0, Op::kForward, f0);
  }
  for (int64_t i = 0; i < pp - rank; ++i) {
    add(s1, Op::kForward, f1);
    input_then_weight(s1, b1);
  }
  while (f1 < f0 || f0 < n_micro) {
    if (f0 < n_micro) add(s0, Op::kForward, f0);
    input_then_weight(s0, b0);
    add(s1, Op::kForward, f1);
    input_then_weight(s1, b1);
  }
  int64_t w0 = b0, w1 = b1;
  for (int64_t i = 0; i < rank; ++i) {
    add(s0, Op::kBackwardInput, b0);
    add(s1, Op::kBackwardInput, b1);
  }
  for (int64_t i = 0; i < pp - rank; ++i) {
    add(s0, Op::kBackwardInput, b0);
    add(s0, Op::kBackwardWeight, w0);
  }
  while (w1 < b1) add(s1, Op::kBackwardWeight, w1);
  while (w0 < b0) add(s0, Op::kBackwardWeight, w0);
  std::vector<PipelineAction> kept;
  for (const auto& a : ops)
    if (a.microbatch < n) kept.push_back(a);
  return kept;
}

// DualPipeV (PyTorch's ScheduleDualPipeV): an overlapped forward + backward pair runs as the
// forward, then the full backward.
std::vector<PipelineAction> dualpipev_rank_ops(int64_t rank, int64_t pp, int64_t n) {
  const int64_t s0 = rank, s1 = 2 * pp - 1 - rank;
  std::map<std::pair<int64_t, Op>, int64_t> count;  // (stage, F | I | W) -> next microbatch; B counts as I and W
  std::deque<std::pair<int64_t, int64_t>> weights;   // (stage, microbatch) of I steps whose W is pending
  std::vector<PipelineAction> ops;
  auto add = [&](int64_t stage, Op op) {
    if (op == Op::kBackward) {
      ops.push_back({stage, op, count[{stage, Op::kBackwardInput}]++});
      ++count[{stage, Op::kBackwardWeight}];
      return;
    }
    const int64_t mb = count[{stage, op}]++;
    ops.push_back({stage, op, mb});
    if (op == Op::kBackwardInput) weights.emplace_back(stage, mb);
  };
  auto add_weight_if_pending = [&] {
    if (weights.empty()) return;
    const auto [stage, mb] = weights.front();
    weights.pop_front();
    ops.push_back({stage, Op::kBackwardWeight, mb});
    ++count[{stage, Op::kBackwardWeight}];
  };
  auto overlap = [&](int64_t forward_stage, int64_t backward_stage) {
    add(forward_stage, Op::kForward);
    add(backward_stage, Op::kBackward);
  };
  for (int64_t i = 0; i < (pp - rank - 1) * 2; ++i) add(s0, Op::kForward);
  for (int64_t i = 0; i < rank + 1; ++i) {
    add(s0, Op::kForward);
    add(s1, Op::kForward);
  }
  for (int64_t i = 0; i < pp - rank - 1; ++i) {
    add(s1, Op::kBackwardInput);
    add_weight_if_pending();
    add(s1, Op::kForward);
  }
  for (int64_t i = 0; i < n - pp * 2 + rank + 1; ++i) {
    overlap(s0, s1);  // on the last rank the first pair is two plain actions: the same order here
    overlap(s1, s0);
  }
  for (int64_t i = 0; i < pp - rank - 1; ++i) {
    add(s1, Op::kBackward);
    overlap(s1, s0);
  }
  bool zero_bubble = false;
  const int64_t step6 = rank + 1;
  for (int64_t i = 0; i < step6; ++i) {
    if (i == step6 / 2 && rank % 2 == 1) zero_bubble = true;
    add(s1, zero_bubble ? Op::kBackwardInput : Op::kBackward);
    if (i == step6 / 2 && rank % 2 == 0) zero_bubble = true;
    add(s0, zero_bubble ? Op::kBackwardInput : Op::kBackward);
  }
  for (int64_t i = 0; i < pp - rank - 1; ++i) {
    add_weight_if_pending();
    add(s0, zero_bubble ? Op::kBackwardInput : Op::kBackward);
  }
  for (int64_t i = 0; i < rank + 1; ++i) add_weight_if_pending();
  return ops;
}

}  // namespace

std::string PipelineAction::str() const { return std::to_string(stage) + op_name(op) + std::to_string(microbatch); }

PipelineAction PipelineAction::parse(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  const size_t digits = i;
  const bool ok = digits > 0 && i < text.size() && std::string("FBIW").find(text[i]) != std::string::npos &&
                  i + 1 < text.size() && text.find_first_not_of("0123456789", i + 1) == std::string::npos &&
                  digits <= 9 && text.size() - i - 1 <= 9;
  if (!ok) throw Err("'" + text + "' is not a pipeline action (valid: <stage><F|B|I|W><microbatch>, e.g. 0F0, 2I1, 3W1)");
  static const std::map<char, Op> ops = {{'F', Op::kForward}, {'B', Op::kBackward}, {'I', Op::kBackwardInput}, {'W', Op::kBackwardWeight}};
  return {std::stoll(text.substr(0, digits)), ops.at(text[digits]), std::stoll(text.substr(digits + 1))};
}

PipelineScheduleKind pipeline_schedule_kind(const std::string& name) {
  static const std::vector<PipelineScheduleKind> kinds = {
      {"1F1B", false, StageStyle::kLoop, false},
      {"Interleaved1F1B", true, StageStyle::kLoop, false},
      {"GPipe", false, StageStyle::kLoop, false},
      {"LoopedBFS", true, StageStyle::kLoop, false},
      {"InterleavedZeroBubble", true, StageStyle::kLoop, false},
      {"PipelineScheduleSingle", false, StageStyle::kLoop, true},
      {"PipelineScheduleMulti", true, StageStyle::kLoop, true},
      {"ZBVZeroBubble", true, StageStyle::kV, false},
      {"DualPipeV", true, StageStyle::kV, false},
  };
  std::string valid;
  for (const auto& k : kinds) {
    if (lower(k.name) == lower(name)) return k;
    valid += (valid.empty() ? "" : ", ") + k.name;
  }
  throw Err("parallelism.pipeline_parallel_schedule '" + name + "' is not a pipeline schedule (valid: " + valid + ")");
}

int64_t pipeline_num_stages(const PipelineScheduleKind& kind, int64_t pp, int64_t num_layers,
                            std::optional<int64_t> layers_per_stage, int64_t first_less, int64_t last_less) {
  if (!layers_per_stage) return pp * (kind.multi_stage ? 2 : 1);
  if (*layers_per_stage < 1)
    throw Err("parallelism.pipeline_parallel_layers_per_stage " + str(*layers_per_stage) + " must be at least 1");
  const int64_t stages = (num_layers + first_less + last_less + *layers_per_stage - 1) / *layers_per_stage;
  const std::string model = "Model has " + str(num_layers) + " layers with pipeline_parallel_layers_per_stage=" +
                            str(*layers_per_stage);
  if (stages % pp != 0)
    throw Err("Number of virtual stages (" + str(stages) + ") must be divisible by pipeline parallel size (" + str(pp) +
              "). " + model + ". Please adjust pipeline_parallel_layers_per_stage to a value that results in a number of "
              "stages divisible by " + str(pp) + ".");
  const int64_t per_rank = stages / pp;
  const std::string spread = model + ", resulting in num_virtual_stages=" + str(stages) + " across " + str(pp) + " PP ranks.";
  if (!kind.multi_stage && per_rank != 1)
    throw Err("Single stage schedule requires exactly 1 stage per rank, but got " + str(per_rank) + " stages per rank. " +
              spread + " Please increase pipeline_parallel_layers_per_stage to " + str(num_layers / pp) +
              " or higher to achieve 1 stage per rank.");
  if (kind.multi_stage && per_rank < 2)
    throw Err("Multi-stage schedule requires at least 2 stages per rank, but got " + str(per_rank) + " stages per rank. " +
              spread + " Please decrease pipeline_parallel_layers_per_stage to achieve at least 2 stages per rank.");
  return stages;
}

std::vector<int64_t> pipeline_stage_ranks(StageStyle style, int64_t pp, int64_t num_stages) {
  std::vector<int64_t> rank(static_cast<size_t>(num_stages));
  for (int64_t s = 0; s < num_stages; ++s)
    rank[static_cast<size_t>(s)] = style == StageStyle::kLoop ? s % pp : (s < pp ? s : 2 * pp - 1 - s);
  return rank;
}

PipelineOrder make_pipeline_order(const PipelineScheduleKind& kind, int64_t pp, int64_t num_stages, int64_t n) {
  if (kind.needs_csv)
    throw Err("parallelism.pipeline_parallel_schedule " + kind.name + " takes its order from parallelism.pipeline_parallel_schedule_csv");
  if (num_stages % pp != 0) throw Err(str(num_stages) + " stages do not divide over " + str(pp) + " pipeline ranks");
  const int64_t n_local = num_stages / pp;
  if (!kind.multi_stage && n_local != 1)
    throw Err(kind.name + " runs one stage per rank, not " + str(n_local));
  if (kind.style == StageStyle::kV && n_local != 2)
    throw Err("ZBV requires exactly 2 stages per rank, but got " + str(n_local) + ".");
  if (kind.name == "1F1B" && n < num_stages)
    throw Err("Number of microbatches (" + str(n) + ") must be greater than or equal to the number of stages (" +
              str(num_stages) + ").");
  if (kind.name == "DualPipeV" && n < num_stages)
    throw Err("DualPipeV requires at least as many microbatches as stages, but got " + str(n) + " microbatches and " +
              str(num_stages) + " stages.");
  PipelineOrder order(static_cast<size_t>(pp));
  for (int64_t rank = 0; rank < pp; ++rank) {
    auto& ops = order[static_cast<size_t>(rank)];
    if (kind.name == "GPipe" || kind.name == "1F1B") {
      const int64_t warmup = kind.name == "GPipe" ? n : std::min(n, num_stages - rank);  // 1F1B: the last stage warms up with one
      for (int64_t m = 0; m < warmup; ++m) ops.push_back({rank, Op::kForward, m});
      for (int64_t m = 0; m < n; ++m) {
        ops.push_back({rank, Op::kBackward, m});
        if (warmup + m < n) ops.push_back({rank, Op::kForward, warmup + m});
      }
    } else if (kind.name == "LoopedBFS") {  // every microbatch through each of the rank's stages, then back
      for (int64_t s = rank; s < num_stages; s += pp)
        for (int64_t m = 0; m < n; ++m) ops.push_back({s, Op::kForward, m});
      for (int64_t s = num_stages - pp + rank; s >= 0; s -= pp)
        for (int64_t m = n - 1; m >= 0; --m) ops.push_back({s, Op::kBackward, m});
    } else if (kind.name == "Interleaved1F1B" || kind.name == "InterleavedZeroBubble") {
      ops = interleaved_rank_ops(rank, pp, n_local, n, kind.name == "InterleavedZeroBubble");
    } else if (kind.name == "ZBVZeroBubble") {
      ops = zbv_rank_ops(rank, pp, n);
    } else {
      ops = dualpipev_rank_ops(rank, pp, n);
    }
  }
  return order;
}

PipelineOrder read_pipeline_csv(const std::string& path, int64_t pp) {
  std::ifstream in(path);
  if (!in) throw Err("parallelism.pipeline_parallel_schedule_csv: cannot read " + path);
  PipelineOrder order;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto& ops = order.emplace_back();
    size_t begin = 0;
    for (int64_t column = 1;; ++column) {
      const size_t end = line.find(',', begin);
      std::string cell = line.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
      cell.erase(0, cell.find_first_not_of(" \t"));
      cell.erase(cell.find_last_not_of(" \t") + 1);
      if (!cell.empty()) {
        try {
          ops.push_back(PipelineAction::parse(cell));
        } catch (const Err& e) {
          throw Err(path + " row " + str(static_cast<int64_t>(order.size())) + " column " + str(column) + ": " + e.what());
        }
      }
      if (end == std::string::npos) break;
      begin = end + 1;
    }
  }
  if (static_cast<int64_t>(order.size()) != pp)
    throw Err(path + " has " + str(static_cast<int64_t>(order.size())) + " rows, one per pipeline rank: " + str(pp) + " expected");
  return order;
}

PipelineOrder lower_pipeline_order(const PipelineOrder& compute, const std::vector<int64_t>& stage_ranks) {
  const int64_t num_stages = static_cast<int64_t>(stage_ranks.size());
  auto rank_of = [&](int64_t stage) { return stage_ranks.at(static_cast<size_t>(stage)); };
  PipelineOrder lowered(compute.size());
  for (size_t r = 0; r < compute.size(); ++r) {
    const auto rank = static_cast<int64_t>(r);
    for (const PipelineAction& a : compute[r]) {
      const bool forward = a.op == Op::kForward, backward = is_backward(a.op);
      const bool reads_remote = forward ? a.stage > 0 && rank_of(a.stage - 1) != rank
                                        : backward && a.stage + 1 < num_stages && rank_of(a.stage + 1) != rank;
      const bool feeds_remote = forward ? a.stage + 1 < num_stages && rank_of(a.stage + 1) != rank
                                        : backward && a.stage > 0 && rank_of(a.stage - 1) != rank;
      if (reads_remote) lowered[r].push_back({a.stage, forward ? Op::kRecvF : Op::kRecvB, a.microbatch});
      lowered[r].push_back(a);
      if (feeds_remote) lowered[r].push_back({a.stage, forward ? Op::kSendF : Op::kSendB, a.microbatch});
    }
  }
  return lowered;
}

void simulate_pipeline_order(const PipelineOrder& lowered, const std::vector<int64_t>& stage_ranks, int64_t n) {
  const int64_t num_stages = static_cast<int64_t>(stage_ranks.size());
  using Key = std::tuple<int64_t, Op, int64_t>;
  std::set<Key> done;
  auto did = [&](int64_t stage, Op op, int64_t mb) { return done.count(Key{stage, op, mb}) > 0; };
  auto did_backward = [&](int64_t stage, int64_t mb) { return did(stage, Op::kBackward, mb) || did(stage, Op::kBackwardInput, mb); };
  auto rank_of = [&](int64_t stage) { return stage_ranks.at(static_cast<size_t>(stage)); };
  // Every action names a real stage on this rank and a real microbatch, and runs once.
  for (size_t r = 0; r < lowered.size(); ++r)
    for (const auto& a : lowered[r]) {
      if (a.stage < 0 || a.stage >= num_stages || a.microbatch < 0 || a.microbatch >= n)
        throw Err("rank " + str(static_cast<int64_t>(r)) + ": " + a.str() + " names no stage of " + str(num_stages) +
                  " or microbatch of " + str(n));
      if (rank_of(a.stage) != static_cast<int64_t>(r))
        throw Err("rank " + str(static_cast<int64_t>(r)) + ": " + a.str() + " is for stage " + str(a.stage) + ", which runs on rank " +
                  str(rank_of(a.stage)));
    }
  // Whether `a` on its rank can start now, and what it waits for if not.
  auto ready = [&](const PipelineAction& a) -> bool {
    const int64_t s = a.stage, m = a.microbatch;
    switch (a.op) {
      case Op::kForward:
        if (did(s, Op::kForward, m)) throw Err(a.str() + " runs twice");
        return s == 0 || (rank_of(s - 1) == rank_of(s) ? did(s - 1, Op::kForward, m) : did(s, Op::kRecvF, m));
      case Op::kBackward:
      case Op::kBackwardInput:
        if (did_backward(s, m)) throw Err(a.str() + ": stage " + str(s) + " already ran the backward of microbatch " + str(m));
        if (!did(s, Op::kForward, m)) return false;
        return s == num_stages - 1 || (rank_of(s + 1) == rank_of(s) ? did_backward(s + 1, m) : did(s, Op::kRecvB, m));
      case Op::kBackwardWeight:
        if (did(s, Op::kBackwardWeight, m)) throw Err(a.str() + " runs twice");
        return did(s, Op::kBackwardInput, m);
      case Op::kSendF: return did(s, Op::kForward, m);
      case Op::kSendB: return did_backward(s, m);
      case Op::kRecvF: return did(s - 1, Op::kSendF, m);
      case Op::kRecvB: return did(s + 1, Op::kSendB, m);
    }
    return false;
  };
  std::vector<size_t> next(lowered.size(), 0);
  for (bool progress = true; progress;) {
    progress = false;
    for (size_t r = 0; r < lowered.size(); ++r)
      while (next[r] < lowered[r].size() && ready(lowered[r][next[r]])) {
        const auto& a = lowered[r][next[r]++];
        done.insert(Key{a.stage, a.op, a.microbatch});
        progress = true;
      }
  }
  std::string waiting;
  for (size_t r = 0; r < lowered.size(); ++r)
    if (next[r] < lowered[r].size()) waiting += " rank " + str(static_cast<int64_t>(r)) + " at " + lowered[r][next[r]].str() + ";";
  if (!waiting.empty()) throw Err("the pipeline order deadlocks:" + waiting.substr(0, waiting.size() - 1));
  for (int64_t s = 0; s < num_stages; ++s)
    for (int64_t m = 0; m < n; ++m) {
      const std::string what = "stage " + str(s) + " microbatch " + str(m);
      if (!did(s, Op::kForward, m)) throw Err(what + " never runs forward");
      if (!did_backward(s, m)) throw Err(what + " never runs backward");
      if (did(s, Op::kBackwardInput, m) != did(s, Op::kBackwardWeight, m))
        throw Err(what + (did(s, Op::kBackwardInput, m) ? " runs I without W" : " runs W without I"));
      if (did(s, Op::kBackward, m) && did(s, Op::kBackwardInput, m)) throw Err(what + " runs both B and I");
    }
}

}  // namespace titan
