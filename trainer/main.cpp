// titan_train: parse the config, train, and turn every bad input into one line on stderr.
#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/config_manager.h"
#include "parallel/logging.h"
#include "parallel/parallel_dims.h"
#include "trainer/trainer.h"

namespace {

void on_sigint(int) {
  if (titan::Trainer::stop_requested()) std::_Exit(130);  // a second Ctrl-C stops at once
  titan::Trainer::stop_requested() = true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (titan::wants_help(args)) {
      std::printf("%s", titan::config_help_text().c_str());
      return 0;
    }
    const auto env = titan::RankEnv::from_environment();
    titan::configure_logging(env.rank, env.world_size);
    titan::JobConfig config = titan::parse_job_config(args);
    for (const auto& w : titan::validate_job_config(config)) titan::log_warning(w);
    std::signal(SIGINT, on_sigint);
    std::signal(SIGTERM, on_sigint);
    const bool seed_only = config.checkpoint.create_seed_checkpoint;
    titan::Trainer trainer(std::move(config));
    if (seed_only) {
      trainer.create_seed_checkpoint();
      return 0;
    }
    return trainer.train() ? 0 : 130;
  } catch (const c10::Error& e) {
    titan::log_error(titan::first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    titan::log_error(titan::first_line(e.what()));
  }
  return 1;
}
