#!/usr/bin/env bash
# The single levers behind the training bench's numbers, each against the form it replaced, with
# errors against float64: attention, AdamW, RMSNorm, RoPE, the SwiGLU gate, cross-entropy alone and
# fused with the projection, the gradient norm, bf16 GEMMs, data loading (kernel_bench.cpp: which forms).
# Usage: bench/kernel_bench.sh [ROUNDS] [ROW]   (threads = the machine's cores; ROW: one row by its
# function's name in kernel_bench.cpp, e.g. linear_cross_entropy)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_kernel_bench
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
"${TITAN_BUILD_DIR:-$ROOT/build}/titan_kernel_bench" "$ROOT/tests/assets/tokenizer" \
  "$ROOT/tests/assets/janeausten/janeausten.txt" "${1:-5}" ${2:+"$2"}
