// Real ranks for a unit test: the test re-runs its own binary once per rank (filtered to itself,
// with TITAN_TEST_RANK, WORLD_SIZE, TITAN_TEST_STORE and MASTER_PORT set), waits for all of them and fails if any
// rank fails or outlives the timeout. Inside a rank, test_rank() says which one it is and
// world_group() joins all of them in one process group.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
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

// Inside a rank: every rank of the run in one group, meeting in a FileStore (TITAN_TEST_STORE).
// Call it once per rank process: a second group would meet under the first one's keys (the cause of
// a rare "1/2 clients joined" when a test made one group per case over a TCPStore on one port).
inline std::unique_ptr<ProcessGroup> world_group(int rank, const torch::Device& device = torch::kCPU) {
  const int world = std::atoi(std::getenv("WORLD_SIZE"));
  auto store = c10::make_intrusive<c10d::FileStore>(std::getenv("TITAN_TEST_STORE"), world);
  store->setTimeout(std::chrono::seconds(300));  // a cold start reads libtorch's libraries from disk
  std::vector<int64_t> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(r);
  return std::make_unique<ProcessGroup>("test", ranks, rank, store, std::make_shared<std::chrono::milliseconds>(300000),
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
inline bool run_as_ranks(int world, std::chrono::seconds timeout = std::chrono::seconds(600)) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string filter = std::string("--gtest_filter=") + info->test_suite_name() + "." + info->name();
  const std::string port = "MASTER_PORT=" + std::to_string(free_tcp_port());  // for tests that rendezvous as the trainer
  const std::string store_path = (std::filesystem::temp_directory_path() /
                                  ("titan_test_store_" + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}())))
                                     .string();
  const std::string store = "TITAN_TEST_STORE=" + store_path;
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world; ++rank) {
    std::vector<std::string> env_strings = {"TITAN_TEST_RANK=" + std::to_string(rank), "WORLD_SIZE=" + std::to_string(world),
                                            port, store, "MASTER_ADDR=127.0.0.1"};
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
  std::error_code ec;
  std::filesystem::remove(store_path, ec);
  return ok;
}

}  // namespace titan::testing
