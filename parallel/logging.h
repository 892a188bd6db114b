// TorchTitan's log format: "[titan] 2026-01-01 12:00:00,123 - root - INFO - message".
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace titan {

void log_info(const std::string& message);
void log_warning(const std::string& message);
// Errors are printed by every rank, on stderr, prefixed like the log lines.
void log_error(const std::string& message);

// The first line of an error message: libtorch and c10d errors carry a C++ backtrace after it.
inline std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

// "1.23": seconds since `begin`, as TorchTitan's "Finished dumping ... in 1.23 seconds" lines print them.
std::string seconds_since(std::chrono::steady_clock::time_point begin);

// With several ranks, lines get a "[rankN]: " prefix and only the ranks listed in LOG_RANK
// (comma separated, default 0) print info and warnings, as torchrun's --local-ranks-filter.
void configure_logging(int64_t rank, int64_t world_size);

// Colours for the metrics line; empty strings when disabled or when stdout is not a terminal.
struct Colors {
  std::string red, green, yellow, blue, cyan, turquoise, reset;
};
Colors colors(bool disable_color_printing);

}  // namespace titan
