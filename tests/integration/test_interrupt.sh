#!/usr/bin/env bash
# Ctrl-C stops training cleanly after the current step.
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
echo "PASS"
