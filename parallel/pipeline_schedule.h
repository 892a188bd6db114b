// Pipeline schedules as data: each pp rank's ordered list of actions for one step, made by one
// small generator per schedule (the orders of PyTorch's torch.distributed.pipelining schedules,
// which TorchTitan runs) or read from a CSV, then lowered to the sends and receives between stages
// on different ranks, and checked by a simulator of the runtime: every action runs once, on its
// stage's rank, after what it needs, and no rank waits forever.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace titan {

// F: forward; B: full backward; I / W: backward split into the input gradient (on the critical
// path) and the weight gradient (filling bubbles); the rest move activations (F) and their
// gradients (B) between ranks.
enum class PipelineOp { kForward, kBackward, kBackwardInput, kBackwardWeight, kSendF, kRecvF, kSendB, kRecvB };

struct PipelineAction {
  int64_t stage = 0;
  PipelineOp op = PipelineOp::kForward;
  int64_t microbatch = 0;

  std::string str() const;  // PyTorch's spelling: "2I1", "0SEND_F3"
  // Parses one compute action (F, B, I or W); throws std::invalid_argument naming the text.
  static PipelineAction parse(const std::string& text);
  bool operator==(const PipelineAction& o) const { return stage == o.stage && op == o.op && microbatch == o.microbatch; }
};

using PipelineOrder = std::vector<std::vector<PipelineAction>>;  // [pp rank] -> its actions, in order

// How stages map to ranks: loop gives rank r the stages r, r + pp, ...; v gives (r, 2 pp - 1 - r).
enum class StageStyle { kLoop, kV };

struct PipelineScheduleKind {
  std::string name;          // PyTorch's spelling, e.g. "Interleaved1F1B"
  bool multi_stage = false;  // false: one stage per rank (GPipe, 1F1B, PipelineScheduleSingle)
  StageStyle style = StageStyle::kLoop;
  bool needs_csv = false;    // PipelineScheduleSingle / PipelineScheduleMulti: the order comes from a CSV
};

// A schedule by name, case-insensitive, as torch.distributed.pipelining.get_schedule_class; throws
// std::invalid_argument listing the valid names.
PipelineScheduleKind pipeline_schedule_kind(const std::string& name);

// How many stages the model is cut into (TorchTitan's pipeline_llm): with `layers_per_stage`,
// ceil((layers + first_less + last_less) / layers_per_stage), which pp must divide, one per rank
// for a single-stage schedule and at least two for a multi-stage one; without it, one or two per
// rank. Throws std::invalid_argument with TorchTitan's message, on one line.
int64_t pipeline_num_stages(const PipelineScheduleKind& kind, int64_t pp, int64_t num_layers,
                            std::optional<int64_t> layers_per_stage, int64_t first_less, int64_t last_less);

// stage -> pp rank.
std::vector<int64_t> pipeline_stage_ranks(StageStyle style, int64_t pp, int64_t num_stages);

// Every rank's compute order for one step of `microbatches` microbatches through `num_stages`
// stages; throws std::invalid_argument with PyTorch's message where PyTorch's schedule refuses the
// counts (e.g. 1F1B with fewer microbatches than stages).
PipelineOrder make_pipeline_order(const PipelineScheduleKind& kind, int64_t pp, int64_t num_stages, int64_t microbatches);

// A compute order from a CSV file: row r is rank r's actions, comma-separated ("0F0,2I1,3W1"),
// empty cells idle (PyTorch's compute_only format). Throws std::invalid_argument naming the file
// and the cell.
PipelineOrder read_pipeline_csv(const std::string& path, int64_t pp);

// Adds the transfers: a send right after each compute whose result a stage on another rank reads,
// a receive right before each compute that reads one. Adjacent stages on one rank hand over locally.
PipelineOrder lower_pipeline_order(const PipelineOrder& compute, const std::vector<int64_t>& stage_ranks);

// Runs a lowered order as the runtime does (a receive waits for its send, a send never waits) and
// checks it: every stage runs F once per microbatch and either B or I then W, on its own rank,
// after the data it reads. Throws std::invalid_argument saying what is wrong, or on a deadlock
// which action each rank waits in.
void simulate_pipeline_order(const PipelineOrder& lowered, const std::vector<int64_t>& stage_ranks, int64_t microbatches);

}  // namespace titan
