// The two libc functions our kernels' clones call, for avx512_machine.py's freestanding link (which has no libc):
// logf (the cross-entropy's and the attention's log-sum-exp) and memset (the cross-entropy's ignored rows).
// Both are single instructions' work in asm, so neither can be compiled into a call to itself or to libc.
#include <cstddef>

extern "C" {

// ln x = ln 2 · log2 x by the x87's fyl2x, computed in 64-bit precision, then rounded to float.
float logf(float x) {
  long double r = x;
  asm("fldln2\n\tfxch\n\tfyl2x" : "+t"(r) : : "st(1)");
  return static_cast<float>(r);
}

void* memset(void* dst, int c, size_t n) {
  void* d = dst;
  asm volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}
}
