// Builds a JobConfig from defaults < TOML (--job.config_file) < command line, and writes it back.
#pragma once

#include <string>
#include <vector>

#include "trainer/job_config.h"

namespace titan {

// Parses `args` (argv without the program name). Throws std::invalid_argument with a one-line
// message naming the key, file or value on any bad input. Does not run value validation.
JobConfig parse_job_config(const std::vector<std::string>& args);

// True when args ask for --help / -h.
bool wants_help(const std::vector<std::string>& args);

// Every key: section.key, type, default, one-line help.
std::string config_help_text();

// The effective config as TOML (what is written to {dump_folder}/config.toml).
std::string config_to_toml(const JobConfig& config);

// Value checks after parsing: choices, ranges, and "not supported yet" for features not built.
// Throws std::invalid_argument. Returns warnings (deprecated keys and the like) to log.
std::vector<std::string> validate_job_config(JobConfig& config);

}  // namespace titan
