// Tests of the CPU attention kernels as parameterized cases: each runs with the widest kernels the CPU
// has, and again on AVX2's path (8 lanes, bf16 through fp32) where those are AVX-512's.
#pragma once

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "models/common/flash_attention_cpu.h"

namespace titan {

class FlashIsaCases : public ::testing::TestWithParam<FlashIsa> {
  static bool has_avx512() {
#if defined(__x86_64__)
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
  }

 protected:
  void SetUp() override {
    if (GetParam() == FlashIsa::kAvx2 && !has_avx512())
      GTEST_SKIP() << "this CPU has no AVX-512: its widest kernels are AVX2's, run by the Widest case";
    previous_ = flash_isa();
    set_flash_isa(GetParam());
  }
  void TearDown() override { set_flash_isa(previous_); }

 private:
  FlashIsa previous_ = FlashIsa::kWidest;
};

inline const std::vector<FlashIsa> kFlashIsas = {FlashIsa::kWidest, FlashIsa::kAvx2};

// The case's name in test names; ctest's names print the parameter by it too.
inline std::string case_name(FlashIsa isa) {
  return isa == FlashIsa::kWidest ? "Widest" : "Avx2";
}
inline std::string flash_isa_name(const ::testing::TestParamInfo<FlashIsa>& info) {
  return case_name(info.param);
}
inline void PrintTo(FlashIsa isa, std::ostream* os) {
  *os << case_name(isa);
}

}  // namespace titan
