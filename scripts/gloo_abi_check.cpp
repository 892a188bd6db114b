// Built by scripts/setup_gloo_headers.sh only: constructing GlooStore makes the compiler emit its
// vtable, and gloo's Store and exception vtables, from the gloo headers we build against; their
// sizes are compared with the same vtables in libtorch_cpu.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

void titan_gloo_abi_check(const c10::intrusive_ptr<c10d::Store>& store) {
  c10d::ProcessGroupGloo::GlooStore wrapped(store);
  throw gloo::InvalidOperationException("titan");
}
