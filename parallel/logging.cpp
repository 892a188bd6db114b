#include "parallel/logging.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>

namespace titan {
namespace {

void log_line(const char* level, const std::string& message) {
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
  std::printf("[titan] %s,%03lld - root - %s - %s\n", stamp, static_cast<long long>(ms), level, message.c_str());
  std::fflush(stdout);
}

}  // namespace

void log_info(const std::string& message) { log_line("INFO", message); }
void log_warning(const std::string& message) { log_line("WARNING", message); }

Colors colors(bool disable_color_printing) {
  if (disable_color_printing || !isatty(STDOUT_FILENO)) return {};
  return {"\033[31m", "\033[32m", "\033[33m", "\033[34m", "\033[36m", "\033[96m", "\033[39m"};
}

}  // namespace titan
