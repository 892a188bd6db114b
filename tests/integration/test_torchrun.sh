#!/usr/bin/env bash
# titan_train under the real torchrun (the venv's, torch 2.11): its agent serves the TCPStore, so
# every rank is a client under /worker/attempt_N. Two local ranks give the losses of
# NGPU=2 ./run_train.sh; two single-rank torchruns as two nodes too; with --max-restarts 1 a rank
# killed mid-run is restarted and resumes from the newest complete checkpoint, and the curve
# continues as an uninterrupted run's.
source "$(dirname "$0")/lib.sh"
./scripts/setup.sh && ./scripts/build.sh titan_train titan_sentencepiece
BIN="${TITAN_BUILD_DIR:-$ROOT/build}/titan_train"
TORCHRUN="$TITAN_VENV/bin/torchrun"
ARGS=("${SMALL[@]}" --training.local_batch_size 2)  # FSDP over the two ranks
DIRECT=(--job.config_file configs/debug_model.toml "${ARGS[@]}")
# The reference: NGPU=2 through our launcher; full-precision "step loss grad_norm" from rank 0.
NGPU=2 train "$WORK/ours.log" "${ARGS[@]}" --training.steps 4 \
  --job.dump_folder "$WORK/ours"
[[ $RC -eq 0 ]] || { cat "$WORK/ours.log"; fail "NGPU=2 run exited $RC"; }
metrics "$WORK/ours" >"$WORK/ours.metrics"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive  # what run_train.sh gives each of 2 ranks on 2 cores
same() {  # same NAME WHAT: run NAME's metrics are the reference's
  metrics "$WORK/$1" >"$WORK/$1.metrics"
  cmp -s "$WORK/ours.metrics" "$WORK/$1.metrics" || { paste "$WORK/ours.metrics" "$WORK/$1.metrics"; fail "$2: losses differ from NGPU=2 ./run_train.sh"; }
}

set +e
"$TORCHRUN" --nproc-per-node 2 --master-port "$(free_port)" --no-python \
  "$BIN" "${DIRECT[@]}" --training.steps 4 --job.dump_folder "$WORK/tr" >"$WORK/tr.log" 2>&1
rc=$?
set -e
[[ $rc -eq 0 ]] || { cat "$WORK/tr.log"; fail "torchrun --nproc-per-node 2 exited $rc"; }
same tr "torchrun --nproc-per-node 2"

# Two nodes of one rank each, on this machine.
port=$(free_port)
pids=()
for node in 0 1; do
  "$TORCHRUN" --nnodes 2 --node-rank $node --nproc-per-node 1 \
    --master-addr 127.0.0.1 --master-port "$port" --no-python "$BIN" "${DIRECT[@]}" --training.steps 4 \
    --job.dump_folder "$WORK/nodes" >"$WORK/node$node.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/node*.log; fail "a torchrun --nnodes 2 node failed"; }; done
same nodes "two torchrun nodes"

# --max-restarts 1: kill rank 1 once step-4 is complete; the restarted job resumes there.
CK=(--checkpoint.enable --checkpoint.interval 2 --checkpoint.no-last_save_model_only --training.steps 8)
NGPU=2 train "$WORK/whole.log" "${ARGS[@]}" "${CK[@]}" \
  --job.dump_folder "$WORK/whole"
[[ $RC -eq 0 ]] || { cat "$WORK/whole.log"; fail "uninterrupted run exited $RC"; }
metrics "$WORK/whole" >"$WORK/whole.metrics"
"$TORCHRUN" --nproc-per-node 2 --max-restarts 1 --master-port "$(free_port)" \
  --no-python "$BIN" "${DIRECT[@]}" "${CK[@]}" --job.dump_folder "$WORK/restart" >"$WORK/restart.log" 2>&1 &
agent=$!
for _ in $(seq 1 900); do [[ -f $WORK/restart/checkpoint/step-4/.metadata ]] && break; sleep 0.1; done
victim=$(rank_pid "$WORK/restart" 1)
[[ -n "$victim" ]] || { cat "$WORK/restart.log"; fail "rank 1 not found"; }
kill -9 "$victim"
set +e
wait $agent
rc=$?
set -e
[[ $rc -eq 0 ]] || { cat "$WORK/restart.log"; fail "torchrun --max-restarts 1 exited $rc after one rank was killed"; }
grep -q "Loaded checkpoint .*step-[4-9] (step [4-9])" "$WORK/restart.log" || { cat "$WORK/restart.log"; fail "the restart did not resume from a checkpoint"; }
resumed=$(grep -oE "Loaded checkpoint .*\(step [0-9]+\)" "$WORK/restart.log" | grep -oE "[0-9]+\)$" | tr -d ')' | tail -1)
# The restarted attempt's lines come last (metrics.jsonl is appended to); each of its steps equals
# the uninterrupted run's.
metrics "$WORK/restart" >"$WORK/restart.metrics"
tail -n $((8 - resumed)) "$WORK/restart.metrics" >"$WORK/after.metrics"
tail -n $((8 - resumed)) "$WORK/whole.metrics" >"$WORK/whole_after.metrics"
cmp -s "$WORK/after.metrics" "$WORK/whole_after.metrics" ||
  { paste "$WORK/whole.metrics" "$WORK/restart.metrics"; fail "the curve after the restart (from step $resumed) differs"; }
echo "PASS"
