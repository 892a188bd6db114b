// Real ranks for a unit test: the test re-runs its own binary once per rank (filtered to itself,
// with TITAN_TEST_RANK, WORLD_SIZE and MASTER_PORT set), waits for all of them and fails if any
// rank fails or outlives the timeout. Inside a rank, test_rank() says which one it is and
// world_group() joins all of them in one process group.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <stdexcept>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "parallel/process_group.h"

extern char** environ;

namespace titan::testing {

inline std::optional<int> test_rank() {
  const char* r = std::getenv("TITAN_TEST_RANK");
  if (!r) return std::nullopt;
  return std::atoi(r);
}

// Inside a rank: every rank of the run in one group, meeting at rank 0's TCPStore (MASTER_PORT).
inline std::unique_ptr<ProcessGroup> world_group(int rank, const torch::Device& device = torch::kCPU) {
  const int world = std::atoi(std::getenv("WORLD_SIZE"));
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<uint16_t>(std::atoi(std::getenv("MASTER_PORT")));
  opts.isServer = rank == 0;
  opts.numWorkers = world;
  opts.timeout = std::chrono::seconds(60);
  auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", opts);
  std::vector<int64_t> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(r);
  return std::make_unique<ProcessGroup>("test", ranks, rank, store, std::make_shared<std::chrono::milliseconds>(60000),
                                        device);
}

// A free port below the kernel's ephemeral range: a client retrying a port inside that range can
// be handed that very port as its own source port and connect to itself (a "join" with no server).
inline int free_tcp_port() {
  int low = 32768, high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  std::mt19937 gen(std::random_device{}());
  std::uniform_int_distribution<int> pick(std::max(1024, low - 12000), low - 1);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int port = pick(gen);
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  throw std::runtime_error("no free TCP port below the ephemeral range");
}

// Runs the current test as `world` processes; true when every rank exited 0 in time.
inline bool run_as_ranks(int world, std::chrono::seconds timeout = std::chrono::seconds(120)) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string filter = std::string("--gtest_filter=") + info->test_suite_name() + "." + info->name();
  const std::string port = "MASTER_PORT=" + std::to_string(free_tcp_port());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> env_strings = {"TITAN_TEST_RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
                                            port, "MASTER_ADDR=127.0.0.1"};
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    for (char** e = environ; *e; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe";
    std::vector<char*> argv = {exe.data(), const_cast<char*>(filter.c_str()), nullptr};
    pid_t pid = 0;
    if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), envp.data()) != 0) return false;
    pids.push_back(pid);
  }
  bool ok = true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (size_t rank = 0; rank < pids.size(); ++rank) {
    const pid_t pid = pids[rank];
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "rank pid " << pid << " still running after " << timeout.count() << " s";
        for (pid_t p : pids) kill(p, SIGKILL);
        waitpid(pid, &status, 0);
        ok = false;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      ADD_FAILURE() << "rank " << rank << " (pid " << pid << ", " << port << ") ended with wait status " << status;
      ok = false;
    }
  }
  return ok;
}

}  // namespace titan::testing
