#!/usr/bin/env bash
# Per-rank activation memory under context parallelism: the debug model trained 2 steps on one
# sequence of 4096 tokens on 1 rank and under cp2 / cp4 with each rotate method (Gloo, fp32, no
# activation checkpointing). Prints rank 0's peak resident memory at seq 4096 minus the same
# layout's at seq 256 (the process, weights and optimizer state without the long sequence's
# activations), and its share of one rank's.
# Usage: bench/cp_memory.sh
# 2026-12-05, 2 cores (AMD EPYC, AVX-512), activations (share of 1 rank): 1 rank 0.64 GiB (1.000), cp2
# allgather 0.33 (0.516), cp2 alltoall 0.31 (0.484), cp4 allgather 0.16 (0.250), cp4 alltoall 0.16
# (0.250). Before the ring kept only q, k, v, its output and log-sum-exp (fp32 blocks by autograd,
# and SDPA with a position mask for allgather): 0.828, 11.3, 0.422 and 5.33.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_train titan_sentencepiece
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

peak() {  # peak NGPU SEQ ARGS...: rank 0's peak RSS in GiB at step 2
  local ngpu="$1" seq="$2"; shift 2
  NGPU=$ngpu "$ROOT/run_train.sh" --training.seq_len "$seq" --training.local_batch_size 1 --training.steps 2 \
    --metrics.log_freq 1 --metrics.disable_color_printing --activation_checkpoint.mode none \
    --training.mixed_precision_param float32 --parallelism.data_parallel_shard_degree 1 \
    --job.dump_folder "$WORK/out" "$@" >"$WORK/log" 2>&1 || { tail -20 "$WORK/log"; exit 1; }
  sed -nE 's/.*step:  2 .*memory: +([0-9.]+)GiB.*/\1/p' "$WORK/log" | head -1
}

echo "layout              peak RSS seq 4096  seq 256  activations (GiB)  share of 1 rank"
one=""
for layout in "1rank 1 1 allgather" "cp2_allgather 2 2 allgather" "cp2_alltoall 2 2 alltoall" \
              "cp4_allgather 4 4 allgather" "cp4_alltoall 4 4 alltoall"; do
  read -r name ngpu cp method <<<"$layout"
  args=(--parallelism.context_parallel_degree "$cp" --parallelism.context_parallel_rotate_method "$method")
  long=$(peak "$ngpu" 4096 "${args[@]}")
  short=$(peak "$ngpu" 256 "${args[@]}")
  act=$(python3 -c "print(f'{$long - $short:.2f}')")
  [[ -n "$one" ]] || one=$act
  printf "%-19s %17s %8s %18s %16s\n" "$name" "$long" "$short" "$act" "$(python3 -c "print(f'{$act / $one:.3f}')")"
done
