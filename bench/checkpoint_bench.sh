#!/usr/bin/env bash
# Checkpoint benchmark: dd's fsynced write speed and our save/load speed on the same disk, in one
# run. Usage: bench/checkpoint_bench.sh [DIR] [GB]   (default: ./outputs/bench 1)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/outputs/bench}"
GB="${2:-1}"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_checkpoint_bench
mkdir -p "$DIR"
MB=$(awk -v g="$GB" 'BEGIN {print int(g * 1000)}')
dd_line=$(dd if=/dev/zero of="$DIR/dd.bin" bs=1M count="$MB" conv=fdatasync 2>&1 | tail -1)
rm -f "$DIR/dd.bin"
echo "dd: $dd_line"
dd_gbps=$(echo "$dd_line" | awk '{for (i = 1; i < NF; i++) if ($(i+1) ~ /^[GM]B\/s$/) {v = $i; if ($(i+1) == "MB/s") v /= 1000; print v}}')
out=$("${TITAN_BUILD_DIR:-$ROOT/build}/titan_checkpoint_bench" "$DIR/ckpt" "$GB")
echo "$out" | grep -v "_GBPS"
save=$(echo "$out" | awk '/^SAVE_GBPS/ {print $2}')
awk -v s="$save" -v d="$dd_gbps" 'BEGIN {printf "save speed / dd write speed: %.2f\n", s / d}'
