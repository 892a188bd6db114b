#!/usr/bin/env bash
# A kill -9 during an async save, or while keep_latest_k retires a step, leaves the newest complete
# checkpoint loadable; a second run on a folder in use is refused; a flipped byte in a data file is
# an error naming the file.
source "$(dirname "$0")/lib.sh"
CK=("${SMALL[@]}" --checkpoint.enable --checkpoint.no-last_save_model_only --checkpoint.interval 2)
./scripts/setup.sh && ./scripts/build.sh titan_train titan_sentencepiece
BIN="${TITAN_BUILD_DIR:-$ROOT/build}/titan_train"

# Saves at 2 and 4 complete; the save of step 6 is held before its manifest and killed there.
"$BIN" --job.config_file configs/debug_model.toml "${CK[@]}" --training.steps 4 --job.dump_folder "$WORK/c" >"$WORK/a.log" 2>&1 ||
  { cat "$WORK/a.log"; fail "first run failed"; }
TITAN_TEST_CHECKPOINT_DELAY_MS=60000 "$BIN" --job.config_file configs/debug_model.toml "${CK[@]}" --training.steps 100 \
  --checkpoint.async_mode async --job.dump_folder "$WORK/c" >"$WORK/b.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [[ -f $WORK/c/checkpoint/step-6/__0_0.safetensors ]] && break
  sleep 0.1
done
sleep 0.5
# A second run on the same folder meanwhile is refused, naming the first (its saves would interleave).
train "$WORK/second.log" "${CK[@]}" --training.steps 2 --job.dump_folder "$WORK/c"
[[ $RC -ne 0 ]] && grep -q "^error: checkpoint folder .*/c/checkpoint is in use by another run (pid $pid)" "$WORK/second.log" ||
  { cat "$WORK/second.log"; fail "a second run shared the checkpoint folder"; }
kill -9 $pid
wait $pid 2>/dev/null || true
[[ -d $WORK/c/checkpoint/step-6 && ! -f $WORK/c/checkpoint/step-6/.metadata ]] || fail "step-6 was not caught mid-save"
train "$WORK/r.log" "${CK[@]}" --training.steps 5 --job.dump_folder "$WORK/c"
[[ $RC -eq 0 ]] || { cat "$WORK/r.log"; fail "resume after the crash exited $RC"; }
grep -q "Loaded checkpoint .*step-4 (step 4)" "$WORK/r.log" || { cat "$WORK/r.log"; fail "did not resume from step-4"; }

# keep_latest_k retires a step by its manifest first: a kill while the data is being removed leaves
# a folder that reads as incomplete, and the resume takes the newest complete step.
TITAN_TEST_RETIRE_DELAY_MS=60000 "$BIN" --job.config_file configs/debug_model.toml "${CK[@]}" --checkpoint.interval 1 \
  --checkpoint.keep_latest_k 2 --training.steps 100 --job.dump_folder "$WORK/k" >"$WORK/k.log" 2>&1 &
pid=$!
k="$WORK/k/checkpoint"
for _ in $(seq 1 600); do
  [[ -f $k/step-3/.metadata && ! -f $k/step-1/.metadata ]] && break
  sleep 0.1
done
kill -9 $pid
wait $pid 2>/dev/null || true
[[ -f $k/step-1/__0_0.safetensors && ! -f $k/step-1/.metadata ]] || { ls -la "$k"/*; fail "step-1 was not caught mid-retirement"; }
train "$WORK/k2.log" "${CK[@]}" --training.steps 4 --job.dump_folder "$WORK/k"
[[ $RC -eq 0 ]] && grep -q "Loaded checkpoint .*step-3 (step 3)" "$WORK/k2.log" || { cat "$WORK/k2.log"; fail "did not resume from step-3"; }

# async and async_with_pinned_mem saves give the same checkpoint as a synchronous one.
for mode in async async_with_pinned_mem; do
  train "$WORK/$mode.log" "${CK[@]}" --training.steps 4 --checkpoint.async_mode $mode --job.dump_folder "$WORK/$mode"
  [[ $RC -eq 0 ]] || { cat "$WORK/$mode.log"; fail "$mode run exited $RC"; }
  cmp "$WORK/c/checkpoint/step-2/__0_0.safetensors" "$WORK/$mode/checkpoint/step-2/__0_0.safetensors" ||
    fail "$mode step-2 differs from the synchronous save"
done

# One flipped byte in the data: the load names the file and the tensor.
f="$WORK/c/checkpoint/step-4/__0_0.safetensors"
size=$(stat -c %s "$f")
printf '\x5a' | dd of="$f" bs=1 seek=$((size - 1000)) conv=notrunc status=none
train "$WORK/flip.log" "${CK[@]}" --training.steps 5 --checkpoint.load_step 4 --job.dump_folder "$WORK/c"
[[ $RC -ne 0 ]] || fail "corrupt checkpoint loaded"
grep -q "^error: checkpoint file .*step-4/__0_0.safetensors is corrupt: tensor '.*' fails its CRC-32 check" "$WORK/flip.log" ||
  { cat "$WORK/flip.log"; fail "corruption message"; }
truncate -s 1000 "$f"
train "$WORK/trunc.log" "${CK[@]}" --training.steps 5 --checkpoint.load_step 4 --job.dump_folder "$WORK/c"
[[ $RC -ne 0 ]] && grep -q "^error: .*__0_0.safetensors: file is truncated" "$WORK/trunc.log" ||
  { cat "$WORK/trunc.log"; fail "truncation message"; }
echo "PASS"
