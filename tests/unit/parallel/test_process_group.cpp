// Every collective we use, over two real ranks (two processes meeting at a TCPStore), in fp32 and
// bf16, against hand-computed results: all-reduce sum and max, all-gather (blocking and started),
// reduce-scatter, all-to-all with uneven splits, send/recv, broadcast, barrier. On Gloo always;
// on NCCL where two GPUs are visible. Built against the gloo headers setup_gloo_headers.sh
// unpacks, this is the run-time proof that they match the wheel's gloo.
#include <ATen/DeviceAccelerator.h>
#include <gtest/gtest.h>

#include "parallel/process_group.h"
#include "tests/unit/parallel/multi_rank.h"

namespace titan {
namespace {

using testing::run_as_ranks;
using testing::test_rank;

// (n) 0, 1, ... n-1 as `dtype` (small integers: exact in bf16), offset by `base`.
torch::Tensor ramp(int64_t n, double base, torch::ScalarType dtype, const torch::Device& device) {
  return (torch::arange(n, torch::kFloat64) + base).to(torch::TensorOptions().dtype(dtype).device(device));
}

void expect_values(const torch::Tensor& t, const std::vector<double>& want, const std::string& what) {
  auto got = t.to(torch::kCPU, torch::kFloat64).reshape({-1});
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  for (int64_t i = 0; i < got.numel(); ++i) EXPECT_EQ(got[i].item<double>(), want[static_cast<size_t>(i)]) << what << "[" << i << "]";
}

void every_collective(int rank, const torch::Device& device) {
  if (device.is_cuda()) at::accelerator::setDeviceIndex(device.index());  // as the trainer: NCCL uses the current GPU
  auto world = testing::world_group(rank, device);
  ProcessGroup& group = *world;
  ASSERT_EQ(group.rank(), rank);
  const double r = rank;

  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const std::string d = std::string(c10::toString(dtype)) + " ";
    auto sum = ramp(4, r + 1, dtype, device);  // rank 0: 1 2 3 4, rank 1: 2 3 4 5
    group.all_reduce(sum);
    expect_values(sum, {3, 5, 7, 9}, d + "all_reduce sum");

    auto max = ramp(3, 0, dtype, device) * (rank == 0 ? 1 : -1) + 10 * r;  // 0 1 2 | 10 9 8
    group.all_reduce(max, ReduceOp::kMax);
    expect_values(max, {10, 9, 8}, d + "all_reduce max");

    auto gathered = torch::empty({2, 3}, ramp(1, 0, dtype, device).options());
    group.all_gather(gathered, ramp(3, 10 * r, dtype, device));
    expect_values(gathered, {0, 1, 2, 10, 11, 12}, d + "all_gather");
    auto started = torch::empty({6}, gathered.options());
    auto wait = group.start_all_gather(started, ramp(3, 20 * r, dtype, device));
    wait();
    expect_values(started, {0, 1, 2, 20, 21, 22}, d + "start_all_gather");
    auto async_sum = ramp(2, r, dtype, device);
    group.start_all_reduce_sum(async_sum)();
    expect_values(async_sum, {1, 3}, d + "start_all_reduce_sum");

    // in[i] = 100 r + i over 2n = 6 elements; rank q keeps sum_r in[3q + k] = 100 + 2 (3q + k).
    auto scattered = torch::empty({3}, gathered.options());
    group.reduce_scatter_sum(scattered, ramp(6, 100 * r, dtype, device));
    expect_values(scattered, rank == 0 ? std::vector<double>{100, 102, 104} : std::vector<double>{106, 108, 110},
                  d + "reduce_scatter_sum");

    // Rows of two columns; rank 0 sends 1 row to 0 and 2 to 1, rank 1 sends 3 to 0 and 1 to 1.
    const std::vector<int64_t> in_splits = rank == 0 ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{3, 1};
    const std::vector<int64_t> out_splits = rank == 0 ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{2, 1};
    auto in = ramp(2 * (rank == 0 ? 3 : 4), 10 * r, dtype, device).view({-1, 2});  // row j of rank r: 10r + 2j, +1
    auto out = torch::empty({rank == 0 ? 4 : 3, 2}, in.options());
    group.all_to_all(out, in, out_splits, in_splits);
    expect_values(out, rank == 0 ? std::vector<double>{0, 1, 10, 11, 12, 13, 14, 15} : std::vector<double>{2, 3, 4, 5, 16, 17},
                  d + "all_to_all uneven");
    auto even_out = torch::empty({4}, in.options());
    group.all_to_all(even_out, ramp(4, 10 * r, dtype, device), {}, {});
    expect_values(even_out, rank == 0 ? std::vector<double>{0, 1, 10, 11} : std::vector<double>{2, 3, 12, 13}, d + "all_to_all even");

    auto received = torch::empty({3}, in.options());
    if (rank == 0) {
      group.start_send(ramp(3, 7, dtype, device), 1)();
      group.recv(received, 1);
      expect_values(received, {-1, 0, 1}, d + "recv on rank 0");
    } else {
      group.recv(received, 0);
      expect_values(received, {7, 8, 9}, d + "recv on rank 1");
      group.start_send(ramp(3, -1, dtype, device), 0)();
    }
    // What a pipeline does: both ranks send before either receives, and receive by tag out of order.
    const int64_t peer = 1 - rank;
    auto first = group.start_send(ramp(2, 100 * r, dtype, device), peer, /*tag=*/5);
    auto second = group.start_send(ramp(2, 100 * r + 10, dtype, device), peer, /*tag=*/6);
    auto tagged = torch::empty({2}, in.options());
    group.recv(tagged, peer, /*tag=*/6);
    expect_values(tagged, {100.0 * peer + 10, 100.0 * peer + 11}, d + "recv tag 6 first");
    group.recv(tagged, peer, /*tag=*/5);
    expect_values(tagged, {100.0 * peer, 100.0 * peer + 1}, d + "recv tag 5 second");
    first();
    second();

    std::vector<torch::Tensor> cast = {ramp(2, 5 * r, dtype, device)};
    group.broadcast(cast, /*root=*/1);
    expect_values(cast[0], {5, 6}, d + "broadcast from rank 1");
  }
  EXPECT_EQ(group.all_reduce_sum(0.25 + r), 1.5);
  group.barrier(std::chrono::seconds(30));
}

TEST(ProcessGroupTwoRanks, GlooEveryCollectiveFp32AndBf16) {
  if (auto rank = test_rank()) return every_collective(*rank, torch::kCPU);
  EXPECT_TRUE(run_as_ranks(2));
}

TEST(ProcessGroupTwoRanks, NcclEveryCollectiveFp32AndBf16) {
  if (auto rank = test_rank()) return every_collective(*rank, torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(*rank)));
  if (!TITAN_CUDA) GTEST_SKIP() << "this libtorch has no CUDA: the NCCL path is not built";
  if (torch::cuda::device_count() < 2) GTEST_SKIP() << "needs 2 visible GPUs, found " << static_cast<int>(torch::cuda::device_count());
  EXPECT_TRUE(run_as_ranks(2));
}

}  // namespace
}  // namespace titan
