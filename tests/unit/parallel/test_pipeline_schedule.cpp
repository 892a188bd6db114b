// Pipeline schedules against PyTorch 2.11's own generators (tests/reference/pipeline_schedules.py)
// and PARALLELISM.md's hand tables; the lowering and the runtime simulator on every schedule.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>

#include "parallel/pipeline_schedule.h"
#include "tests/unit/error_message.h"
#include "tests/unit/reference_fixture.h"

namespace titan {
namespace {

std::string joined(const std::vector<PipelineAction>& ops) {
  std::string out;
  for (const auto& a : ops) out += (out.empty() ? "" : " ") + a.str();
  return out;
}

PipelineOrder order_of(const std::string& schedule, int64_t pp, int64_t stages, int64_t n) {
  return make_pipeline_order(pipeline_schedule_kind(schedule), pp, stages, n);
}

using testing::message_of;

TEST(PipelineSchedule, OrdersEqualPyTorchsGenerators) {
  const auto fixture = testing::load_fixture("tests/assets/reference/pipeline_orders.json");
  const std::regex key(R"((\w+) pp(\d+) stages(\d+) mb(\d+))");
  int compared = 0;
  for (const auto& [name, ranks] : fixture["orders"].items()) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(name, m, key)) << name;
    const int64_t pp = std::stoll(m[2]), stages = std::stoll(m[3]), n = std::stoll(m[4]);
    if (ranks.contains("error")) {
      EXPECT_EQ(message_of([&] { order_of(m[1], pp, stages, n); }), ranks["error"].get<std::string>()) << name;
      continue;
    }
    const PipelineOrder order = order_of(m[1], pp, stages, n);
    ASSERT_EQ(static_cast<int64_t>(order.size()), pp) << name;
    for (int64_t r = 0; r < pp; ++r) EXPECT_EQ(joined(order[r]), ranks[std::to_string(r)].get<std::string>()) << name << " rank " << r;
    ++compared;
  }
  EXPECT_GE(compared, 25);  // GPipe, LoopedBFS, Interleaved1F1B, InterleavedZeroBubble, ZBVZeroBubble, DualPipeV
}

TEST(PipelineSchedule, OneFOneBAsParallelismTables) {  // PyTorch's 1F1B IR skips microbatch 0 on the last rank: by hand
  auto pp2 = order_of("1f1b", 2, 2, 4);
  EXPECT_EQ(joined(pp2[0]), "0F0 0F1 0B0 0F2 0B1 0F3 0B2 0B3");
  EXPECT_EQ(joined(pp2[1]), "1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3");
  auto pp4 = order_of("1F1B", 4, 4, 4);  // warm-up min(n, stages - stage) forwards
  EXPECT_EQ(joined(pp4[1]), "1F0 1F1 1F2 1B0 1F3 1B1 1B2 1B3");
  EXPECT_EQ(joined(pp4[3]), "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3");
  EXPECT_EQ(message_of([] { order_of("1F1B", 4, 4, 2); }),
            "Number of microbatches (2) must be greater than or equal to the number of stages (4).");
}

TEST(PipelineSchedule, StageRanksLoopAndV) {
  EXPECT_EQ(pipeline_stage_ranks(StageStyle::kLoop, 2, 4), (std::vector<int64_t>{0, 1, 0, 1}));
  EXPECT_EQ(pipeline_stage_ranks(StageStyle::kV, 4, 8), (std::vector<int64_t>{0, 1, 2, 3, 3, 2, 1, 0}));
  EXPECT_EQ(pipeline_schedule_kind("zbvzerobubble").style, StageStyle::kV);
  EXPECT_FALSE(pipeline_schedule_kind("GPipe").multi_stage);
  EXPECT_EQ(message_of([] { pipeline_schedule_kind("Interleaved"); }),
            "parallelism.pipeline_parallel_schedule 'Interleaved' is not a pipeline schedule (valid: 1F1B, Interleaved1F1B, "
            "GPipe, LoopedBFS, InterleavedZeroBubble, PipelineScheduleSingle, PipelineScheduleMulti, ZBVZeroBubble, DualPipeV)");
}

// What the runtime does: every schedule, lowered to sends and receives, runs to the end.
TEST(PipelineSchedule, EveryScheduleLowersAndRunsWithoutDeadlock) {
  int simulated = 0;
  for (const std::string name : {"GPipe", "1F1B", "Interleaved1F1B", "LoopedBFS", "InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV"}) {
    const auto kind = pipeline_schedule_kind(name);
    for (int64_t pp : {2, 4})
      for (int64_t n : {4, 8}) {
        const int64_t stages = kind.multi_stage ? 2 * pp : pp;
        if (name == "DualPipeV" && n < stages) continue;  // refused, as PyTorch does
        const auto ranks = pipeline_stage_ranks(kind.style, pp, stages);
        const auto lowered = lower_pipeline_order(make_pipeline_order(kind, pp, stages, n), ranks);
        EXPECT_NO_THROW(simulate_pipeline_order(lowered, ranks, n)) << name << " pp" << pp << " mb" << n;
        ++simulated;
      }
  }
  EXPECT_EQ(simulated, 27);
}

TEST(PipelineSchedule, LoweringSendsAfterAndReceivesBefore) {
  const auto ranks = pipeline_stage_ranks(StageStyle::kLoop, 2, 2);
  const auto lowered = lower_pipeline_order(order_of("GPipe", 2, 2, 2), ranks);
  EXPECT_EQ(joined(lowered[0]), "0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1");
  EXPECT_EQ(joined(lowered[1]), "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1");
  // v style: stages 1 and 2 share rank 1 and hand over without a transfer
  const auto v = pipeline_stage_ranks(StageStyle::kV, 2, 4);
  const auto zbv = lower_pipeline_order(order_of("ZBVZeroBubble", 2, 4, 4), v);
  EXPECT_EQ(joined(zbv[1]).rfind("1RECV_F0 1F0 2F0 2SEND_F0 1RECV_F1 1F1 2F1 2SEND_F1 2RECV_B0 2I0 2W0", 0), 0u) << joined(zbv[1]);
}

TEST(PipelineSchedule, SimulatorFindsDeadlocksAndBrokenOrders) {
  const auto ranks = pipeline_stage_ranks(StageStyle::kLoop, 2, 2);
  auto parse = [](const std::vector<std::vector<std::string>>& rows) {
    PipelineOrder o;
    for (const auto& row : rows) {
      auto& ops = o.emplace_back();
      for (const auto& a : row) ops.push_back(PipelineAction::parse(a));
    }
    return o;
  };
  auto run = [&](const std::vector<std::vector<std::string>>& rows) {
    return message_of([&] { simulate_pipeline_order(lower_pipeline_order(parse(rows), ranks), ranks, 2); });
  };
  // Rank 0 waits for microbatch 1's gradient before it sends microbatch 1 forward.
  EXPECT_EQ(run({{"0F0", "0B1", "0F1", "0B0"}, {"1F0", "1F1", "1B0", "1B1"}}),
            "the pipeline order deadlocks: rank 0 at 0RECV_B1; rank 1 at 1RECV_F1");
  EXPECT_EQ(run({{"0F0", "0F1", "0B0", "0B1"}, {"1F0", "1F1", "1I0", "1B1"}}), "stage 1 microbatch 0 runs I without W");
  EXPECT_EQ(run({{"0F0", "0F1", "0B0", "0B1"}, {"1F0", "1F0", "1B0", "1B1"}}), "1F0 runs twice");
  EXPECT_EQ(run({{"0F0", "0F1", "0B0", "0B1"}, {"1F0", "1F1", "1B0", "0B1"}}), "rank 1: 0B1 is for stage 0, which runs on rank 0");
}

TEST(PipelineSchedule, CsvRowsAreRanks) {
  const auto order = read_pipeline_csv(testing::source_path("tests/assets/custom_schedule.csv"), 2);
  EXPECT_EQ(order[0].front().str(), "0F0");
  EXPECT_EQ(order[1].back().str(), "1B7");
  const auto ranks = pipeline_stage_ranks(StageStyle::kLoop, 2, 4);
  EXPECT_NO_THROW(simulate_pipeline_order(lower_pipeline_order(order, ranks), ranks, 8));

  const std::string path = ::testing::TempDir() + "/bad_schedule.csv";
  std::ofstream(path) << "0F0,,0B0\n1F0,1X0,1B0\n";
  EXPECT_EQ(message_of([&] { read_pipeline_csv(path, 2); }),
            path + " row 2 column 2: '1X0' is not a pipeline action (valid: <stage><F|B|I|W><microbatch>, e.g. 0F0, 2I1, 3W1)");
  std::ofstream(path) << "0F0,0B0\n";
  EXPECT_EQ(message_of([&] { read_pipeline_csv(path, 2); }), path + " has 1 rows, one per pipeline rank: 2 expected");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace titan
