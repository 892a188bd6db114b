#!/usr/bin/env bash
# Failures under data parallelism end the job with a clear error inside the timeout: a rank that
# never arrives, a rank that fails at start-up (named on the other ranks), a rank that hangs
# mid-training, and a rank killed mid-run (after which the newest complete checkpoint still loads).
source "$(dirname "$0")/lib.sh"
FSDP2=("${SMALL[@]}" --training.seq_len 64 --training.local_batch_size 2 --training.mixed_precision_param float32)

# A rank alone: the rendezvous gives up after comm.init_timeout_seconds, to within seconds (the
# binary itself, so that run_train.sh's set-up checks are not timed).
for r in 0 1; do
  p=$(free_port)
  start=$SECONDS
  set +e
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p "${TITAN_BUILD_DIR:-$ROOT/build}/titan_train" \
    --job.config_file ./configs/debug_model.toml "${FSDP2[@]}" --training.steps 2 --comm.init_timeout_seconds 3 \
    --job.dump_folder "$WORK/alone" >"$WORK/alone.log" 2>&1
  rc=$?
  set -e
  [[ $rc -ne 0 ]] || fail "rank $r alone did not fail"
  grep -q "rendezvous at 127.0.0.1:$p failed within comm.init_timeout_seconds=3 (rank $r of 2)" "$WORK/alone.log" ||
    { cat "$WORK/alone.log"; fail "no rendezvous error"; }
  (( SECONDS - start < 8 )) || fail "a 3 s rendezvous timeout took $((SECONDS - start)) s on rank $r"
done

# Rank 1 fails at start-up (its data is missing): rank 0 names it and its error, not a closed connection.
p=$(free_port)
RANK=0 LOCAL_RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p \
  train "$WORK/startup0.log" "${FSDP2[@]}" --training.steps 2 --job.dump_folder "$WORK/startup0" &
RANK=1 LOCAL_RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$p \
  "${TITAN_BUILD_DIR:-$ROOT/build}/titan_train" --job.config_file "${CONFIG_FILE:-./configs/debug_model.toml}" "${FSDP2[@]}" \
  --training.steps 2 --training.dataset_path "$WORK/missing.txt" --job.dump_folder "$WORK/startup1" >"$WORK/startup1.log" 2>&1 || true
wait
grep -q "failed: rank 1 exited during start-up: dataset path '$WORK/missing.txt' does not exist" "$WORK/startup0.log" ||
  { cat "$WORK/startup0.log"; fail "rank 0 does not name the rank that left"; }

# Rank 1 stops (SIGSTOP) after step 3: rank 0's next collective times out after train_timeout_seconds.
export LOG_RANK=0,1
NGPU=2 ./run_train.sh "${FSDP2[@]}" --training.steps 100000 --comm.train_timeout_seconds 5 \
  --job.dump_folder "$WORK/hang" >"$WORK/hang.log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do grep -q "rank1\]: .*step:  3 " "$WORK/hang.log" && break; sleep 0.1; done
victim=$(rank_pid "$WORK/hang" 1)
[[ -n "$victim" ]] || fail "rank 1 not found"
kill -STOP "$victim"
start=$SECONDS
set +e; wait $launcher; rc=$?; set -e
(( SECONDS - start < 60 )) || fail "the hang took $((SECONDS - start)) s to end the job"
[[ $rc -ne 0 ]] || fail "launcher exited 0 after a rank hung"
grep -q "^\[rank0\]: .*timed out after 5 s (a rank died or hangs)" "$WORK/hang.log" || { cat "$WORK/hang.log"; fail "no timeout error"; }
grep -q "^error: rank 0 (pid [0-9]*) exited with code" "$WORK/hang.log" || { cat "$WORK/hang.log"; fail "rank 0 not named"; }
sleep 1
! pgrep -f "titan_train.*$WORK/hang" >/dev/null || fail "ranks left running"

# Rank 1 killed after step 9 of FSDP training with async saves every 2 steps (step 6 is complete by
# then: a save waits for the previous one): the job ends non-zero, and the
# newest complete checkpoint resumes.
NGPU=2 ./run_train.sh "${FSDP2[@]}" --training.steps 100000 --checkpoint.enable --checkpoint.interval 2 \
  --checkpoint.async_mode async --job.dump_folder "$WORK/kill" >"$WORK/kill.log" 2>&1 &
launcher=$!
for _ in $(seq 1 900); do grep -q "rank0\]: .*step:  9 " "$WORK/kill.log" && break; sleep 0.1; done
victim=$(rank_pid "$WORK/kill" 1)
[[ -n "$victim" ]] || fail "rank 1 not found"
kill -9 "$victim"
set +e; wait $launcher; rc=$?; set -e
[[ $rc -ne 0 ]] || fail "launcher exited 0 after a rank was killed"
grep -q "^error: rank 1 (pid $victim) exited with code 137; stopping the other ranks" "$WORK/kill.log" ||
  { cat "$WORK/kill.log"; fail "the killed rank is not named"; }
newest=$(ls -d "$WORK"/kill/checkpoint/step-*/.metadata | sed -E 's|.*/step-([0-9]+)/.metadata|\1|' | sort -n | tail -1)
[[ -n "$newest" && $newest -ge 6 ]] || fail "no complete checkpoint at step 6 or later (newest: '$newest')"
unset LOG_RANK
NGPU=2 train "$WORK/resume.log" "${FSDP2[@]}" --training.steps $((newest + 1)) --checkpoint.enable \
  --job.dump_folder "$WORK/kill"
[[ $RC -eq 0 ]] || { cat "$WORK/resume.log"; fail "resume after the kill exited $RC"; }
grep -q "Training starts at step $((newest + 1))" "$WORK/resume.log" || { cat "$WORK/resume.log"; fail "did not resume"; }
echo "PASS"
