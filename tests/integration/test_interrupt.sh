#!/usr/bin/env bash
# Ctrl-C stops training cleanly after the current step; with two ranks, SIGTERM to the launcher or
# Ctrl-C to the whole process group stops both after the same step with exit code 130 and no error,
# and ranks whose launcher was killed end too.
source "$(dirname "$0")/lib.sh"

./scripts/setup.sh && ./scripts/build.sh titan_train titan_sentencepiece
./run_train.sh "${SMALL[@]}" --training.steps 1000 --job.dump_folder "$WORK/out" >"$WORK/run.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "step:  2" "$WORK/run.log" && break
  sleep 0.1
done
kill -INT $pid
set +e
wait $pid
rc=$?
set -e
[[ $rc -eq 130 ]] || { cat "$WORK/run.log"; fail "exit code $rc after Ctrl-C, expected 130"; }
grep -q "Interrupted: stopping after step" "$WORK/run.log" || fail "no interruption line"
# Two ranks: wait_step LOG N waits until the log shows step N.
wait_step() {
  for _ in $(seq 1 900); do
    grep -q "step:  $2" "$1" && return 0
    sleep 0.1
  done
  cat "$1"; fail "no step $2"
}
for how in term_launcher int_group; do
  LOG_RANK=0,1 NGPU=2 setsid ./run_train.sh "${SMALL[@]}" --training.steps 1000 --job.dump_folder "$WORK/$how" >"$WORK/$how.log" 2>&1 &
  pid=$!
  wait_step "$WORK/$how.log" 2
  start=$(date +%s)
  if [[ $how == term_launcher ]]; then kill -TERM $pid; else kill -INT -- -$pid; fi
  set +e
  wait $pid
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  [[ $rc -eq 130 ]] || { cat "$WORK/$how.log"; fail "$how: exit code $rc, expected 130"; }
  ! grep -qE "^error:|ERROR" "$WORK/$how.log" || { cat "$WORK/$how.log"; fail "$how: an error was reported"; }
  stops=$(grep -o "Interrupted: stopping after step [0-9]*" "$WORK/$how.log" | sort | uniq -c)
  [[ $(echo "$stops" | wc -l) -eq 1 && $(echo "$stops" | awk '{print $1}') -eq 2 ]] ||
    { cat "$WORK/$how.log"; fail "$how: ranks did not stop after the same step: $stops"; }
  ((took < 10)) || fail "$how: the launcher took $took s to return"
  echo "$how: both ranks $(echo "$stops" | awk '{$1=""; print}') (exit 130 in $took s)"
done

# kill -9 of the launcher: its ranks end too.
NGPU=2 setsid ./run_train.sh "${SMALL[@]}" --training.steps 1000 --job.dump_folder "$WORK/orphan" >"$WORK/orphan.log" 2>&1 &
pid=$!
wait_step "$WORK/orphan.log" 2
kill -KILL $pid
for _ in $(seq 1 300); do
  pgrep -f "dump_folder $WORK/orphan" >/dev/null || break
  sleep 0.1
done
! pgrep -f "dump_folder $WORK/orphan" >/dev/null || { pkill -KILL -f "dump_folder $WORK/orphan"; fail "ranks outlived their killed launcher"; }
echo "orphaned ranks ended with their launcher"
echo "PASS"
