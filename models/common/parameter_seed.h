// The seed of one parameter's initialisation: (debug.seed, FQN) through FNV-1a, so a parameter
// gets the same values whichever rank makes it and whatever else exists (layout-independent init).
// tests/reference/llama3_reference.py computes the same numbers.
#pragma once

#include <cstdint>
#include <string>

namespace titan {

inline uint64_t parameter_seed(uint64_t seed, const std::string& fqn) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64 offset basis
  for (unsigned char c : fqn) h = (h ^ c) * 1099511628211ull;
  return h ^ (seed * 0x9E3779B97F4A7C15ull);  // seed spread over all bits
}

}  // namespace titan
