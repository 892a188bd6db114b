// TorchTitan's log format: "[titan] 2026-01-01 12:00:00,123 - root - INFO - message".
#pragma once

#include <string>

namespace titan {

void log_info(const std::string& message);
void log_warning(const std::string& message);

// Colours for the metrics line; empty strings when disabled or when stdout is not a terminal.
struct Colors {
  std::string red, green, yellow, blue, cyan, turquoise, reset;
};
Colors colors(bool disable_color_printing);

}  // namespace titan
