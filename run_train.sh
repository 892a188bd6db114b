#!/usr/bin/env bash
# Train a Llama 3 model: installs what is missing, builds if needed, then launches the trainer.
#   NGPU=1 CONFIG_FILE=configs/debug_model.toml ./run_train.sh --training.steps 30
#   NGPU=2 ./run_train.sh --parallelism.data_parallel_replicate_degree 2 --parallelism.data_parallel_shard_degree 1
# Every argument is a --section.key override of the TOML (see ./run_train.sh --help).
# NGPU ranks per node (CPU processes where there is no GPU), like torchrun: each gets RANK,
# LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; output is prefixed with
# the rank and shown for the ranks in LOG_RANK; if one rank fails, the others are stopped.
# Several nodes: NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT on every node.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU="${NGPU:-1}"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
CONFIG_FILE="${CONFIG_FILE:-$ROOT/configs/debug_model.toml}"
export LOG_RANK="${LOG_RANK:-0}"
# OpenMP threads that sleep instead of spinning between ops: +30-50% tokens/s on the debug model
# here (bench/train_bench.sh); libgomp reads it at load time, so it is set before the trainer starts.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

# TorchTitan's dry runs (COMM_MODE=fake_backend|local_tensor) simulate ranks: not built here.
if [[ -n "${COMM_MODE:-}" && "${COMM_MODE}" != "default" ]]; then
  echo "error: COMM_MODE=$COMM_MODE (TorchTitan's dry run without real ranks) is not supported yet by titan.cpp; unset it" >&2
  exit 2
fi
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_train titan_sentencepiece titan_checkpoint_tool titan_tokenize
BIN="${TITAN_BUILD_DIR:-$ROOT/build}/titan_train"

if [[ "$NGPU" == "1" && "$NNODES" == "1" ]]; then
  exec "$BIN" --job.config_file "$CONFIG_FILE" "$@"
fi
[[ "$NGPU" =~ ^[1-9][0-9]*$ && "$NNODES" =~ ^[1-9][0-9]*$ ]] || { echo "error: NGPU and NNODES must be positive integers" >&2; exit 2; }
export WORLD_SIZE=$((NGPU * NNODES)) LOCAL_WORLD_SIZE=$NGPU MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
if [[ -z "${MASTER_PORT:-}" ]]; then
  [[ "$NNODES" == "1" ]] || { echo "error: set MASTER_PORT (and MASTER_ADDR) on every node when NNODES > 1" >&2; exit 2; }
  MASTER_PORT=$(python3 "$ROOT/scripts/free_port.py")
fi
export MASTER_PORT

# Each rank prefixes its own lines with [rankN] and keeps quiet unless listed in LOG_RANK.
declare -A rank_of=()
pids=()
for ((local = 0; local < NGPU; local++)); do
  rank=$((NODE_RANK * NGPU + local))
  RANK=$rank LOCAL_RANK=$local "$BIN" --job.config_file "$CONFIG_FILE" "$@" &
  rank_of[$!]=$rank
  pids+=($!)
done

stop_all() { kill -TERM "${pids[@]}" 2>/dev/null || true; }
trap 'kill -INT "${pids[@]}" 2>/dev/null || true' INT
trap 'stop_all' TERM

status=0
killer=""
live=("${pids[@]}")
while ((${#live[@]} > 0)); do
  set +e
  done_pid=""
  wait -n -p done_pid "${live[@]}"
  code=$?
  set -e
  [[ -n "${done_pid:-}" ]] || continue  # interrupted by a signal: wait again
  next=()
  for p in "${live[@]}"; do [[ $p == "$done_pid" ]] || next+=("$p"); done
  live=("${next[@]+"${next[@]}"}")
  if ((code == 130)); then
    ((status != 0)) || status=130  # interrupted: the ranks agree on the step to stop after and exit together
  elif ((code != 0 && (status == 0 || status == 130))); then
    status=$code
    echo "error: rank ${rank_of[$done_pid]} (pid $done_pid) exited with code $code; stopping the other ranks" >&2
    stop_all
    (sleep 10 && kill -KILL "${pids[@]}") >/dev/null 2>&1 &
    killer=$!
  fi
done
[[ -z $killer ]] || kill "$killer" 2>/dev/null || true  # every rank has exited: no need to wait out its timer
exit "$status"
