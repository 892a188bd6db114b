// glibc 2.38's C23 names of strtoull and sscanf, onto an older glibc's (Debian bookworm has 2.36): PyPI's
// bochscpu-python (tests/reference/avx512_machine.py) was built against 2.38 and imports only these two.
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

extern "C" {
unsigned long long __isoc23_strtoull(const char* s, char** end, int base) {
  return std::strtoull(s, end, base);
}
int __isoc23_sscanf(const char* s, const char* format, ...) {
  va_list args;
  va_start(args, format);
  const int n = std::vsscanf(s, format, args);
  va_end(args);
  return n;
}
}
