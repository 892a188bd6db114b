// titan_train: parse the config, train, and turn every bad input into one line on stderr.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/config_manager.h"
#include "parallel/logging.h"
#include "parallel/parallel_dims.h"
#include "parallel/rank_exit.h"
#include "trainer/trainer.h"

namespace {

timespec first_signal{};

// The first SIGINT/SIGTERM stops after the current step; another one 2 s later stops at once. The
// launcher forwards the terminal's Ctrl-C that the rank also received: that copy comes within 2 s.
void on_stop_signal(int) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);  // async-signal-safe
  if (titan::Trainer::stop_requested() && now.tv_sec - first_signal.tv_sec >= 2) std::_Exit(130);
  if (!titan::Trainer::stop_requested()) first_signal = now;
  titan::Trainer::stop_requested() = true;
}

// A rank of a launcher (run_train.sh, torchrun) ends with it, as torchrun's workers do.
void stop_with_launcher() {
  if (!std::getenv("LOCAL_RANK")) return;
  const pid_t launcher = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != launcher) raise(SIGTERM);  // it died before the request took effect
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string error;
  try {
    if (titan::wants_help(args)) {
      std::printf("%s", titan::config_help_text().c_str());
      return 0;
    }
    const auto env = titan::RankEnv::from_environment();
    titan::configure_logging(env.rank, env.world_size);
    titan::JobConfig config = titan::parse_job_config(args);
    for (const auto& w : titan::validate_job_config(config)) titan::log_warning(w);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    stop_with_launcher();
    const bool seed_only = config.checkpoint.create_seed_checkpoint;
    titan::Trainer trainer(std::move(config));
    if (seed_only) {
      trainer.create_seed_checkpoint();
      return 0;
    }
    return trainer.train() ? 0 : 130;
  } catch (const c10::Error& e) {
    error = titan::first_line(e.what_without_backtrace());
  } catch (const std::exception& e) {
    error = titan::first_line(e.what());
  }
  titan::log_error(error);
  titan::announce_rank_exit(error);
  return 1;
}
