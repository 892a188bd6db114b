#include "parallel/logging.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace titan {
namespace {

std::string& prefix() {
  static std::string p;
  return p;
}
bool& quiet() {
  static bool q = false;
  return q;
}

void log_line(const char* level, const std::string& message) {
  if (quiet()) return;
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
  std::printf("%s[titan] %s,%03lld - root - %s - %s\n", prefix().c_str(), stamp, static_cast<long long>(ms), level,
              message.c_str());
  std::fflush(stdout);
}

}  // namespace

void configure_logging(int64_t rank, int64_t world_size) {
  if (world_size <= 1) return;
  prefix() = "[rank" + std::to_string(rank) + "]: ";
  const char* env = std::getenv("LOG_RANK");
  const std::string list = "," + std::string(env && *env ? env : "0") + ",";
  quiet() = list.find("," + std::to_string(rank) + ",") == std::string::npos;
}

void log_error(const std::string& message) {
  std::fprintf(stderr, "%serror: %s\n", prefix().c_str(), message.c_str());
  std::fflush(stderr);
}

void log_info(const std::string& message) { log_line("INFO", message); }
void log_warning(const std::string& message) { log_line("WARNING", message); }

Colors colors(bool disable_color_printing) {
  if (disable_color_printing || !isatty(STDOUT_FILENO)) return {};
  return {"\033[31m", "\033[32m", "\033[33m", "\033[34m", "\033[36m", "\033[96m", "\033[39m"};
}

std::string seconds_since(std::chrono::steady_clock::time_point begin) {
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%.2f",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count());
  return seconds;
}

}  // namespace titan
