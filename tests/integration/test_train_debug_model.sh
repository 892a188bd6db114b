#!/usr/bin/env bash
# The debug model trains on the bundled corpus: 30 steps, loss at step 30 well below step 1 and
# below ln(vocab); the log line and the effective config are TorchTitan's.
source "$(dirname "$0")/lib.sh"

train "$WORK/run.log" "${SMALL[@]}" --training.steps 30 --optimizer.lr 1e-3 --job.dump_folder "$WORK/out"
[[ $RC -eq 0 ]] || { cat "$WORK/run.log"; fail "training exited $RC"; }
losses "$WORK/run.log" >"$WORK/losses"
[[ $(wc -l <"$WORK/losses") -eq 30 ]] || fail "expected 30 logged steps, got $(wc -l <"$WORK/losses")"
first=$(awk 'NR==1 {print $2}' "$WORK/losses")
last=$(awk 'END {print $2}' "$WORK/losses")
echo "step 1 loss $first, step 30 loss $last, ln(2048) = 7.625"
awk -v a="$first" 'BEGIN {exit !(a > 7.3 && a < 8.6)}' || fail "step-1 loss $first is not near ln(2048)+0.5 (random init, embedding std 1)"
awk -v a="$first" -v b="$last" 'BEGIN {exit !(b < a - 1.5 && b < 7.625 - 1.0)}' || fail "loss did not fall: $first -> $last"

grep -qE "step:  1  loss: +[0-9]+\.[0-9]{5}  grad_norm: +[0-9]+\.[0-9]{4}  memory: +[0-9]+\.[0-9]{2}GiB\([0-9]+\.[0-9]{2}%\)  tps: [0-9,]+  tflops: [0-9.]+  mfu: [0-9.]+%" \
  "$WORK/run.log" || fail "log line does not match TorchTitan's format"
grep -q "Model llama3 debugmodel size: 6,163,712 total parameters" "$WORK/run.log" || fail "model size line missing"
grep -q "Peak FLOPS used for computing MFU" "$WORK/run.log" || fail "peak FLOPS line missing"
grep -q "Training completed" "$WORK/run.log" || fail "no completion line"
grep -q '^steps = 30$' "$WORK/out/config.toml" || fail "effective config not written to the dump folder"
grep -q '^lr = 0.001$' "$WORK/out/config.toml" || fail "CLI override missing from the effective config"
grep -q '^decay_ratio = 0.8$' "$WORK/out/config.toml" || fail "TOML value missing from the effective config"
# metrics.jsonl: every logged step, the log line's loss and grad_norm to its printed digits, every
# field a number; a second run in the folder appends (its steps 1-2 after the first run's 1-30).
train "$WORK/more.log" "${SMALL[@]}" --training.steps 2 --optimizer.lr 1e-3 --job.dump_folder "$WORK/out"
[[ $RC -eq 0 ]] || { cat "$WORK/more.log"; fail "second run exited $RC"; }
sed -nE 's/.*step: *([0-9]+) +loss: +([0-9.]+) +grad_norm: +([0-9.]+).*/\1 \2 \3/p' "$WORK/run.log" "$WORK/more.log" >"$WORK/logged"
"$TITAN_PYTHON" - "$WORK/out/metrics.jsonl" "$WORK/logged" <<'PY' || fail "metrics.jsonl does not match the log lines"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
logged = [line.split() for line in open(sys.argv[2])]
assert [r["step"] for r in rows] == list(range(1, 31)) + [1, 2], [r["step"] for r in rows]
assert len(logged) == len(rows), (len(logged), len(rows))
for r, (step, loss, grad_norm) in zip(rows, logged):
    assert list(r) == ["step", "loss", "grad_norm", "lr", "tps", "tflops", "mfu", "memory_gib", "memory_pct"], list(r)
    assert all(isinstance(v, (int, float)) for v in r.values()), r
    assert r["step"] == int(step) and f"{r['loss']:.5f}" == loss and f"{r['grad_norm']:.4f}" == grad_norm, (r, loss, grad_norm)
print(f"metrics.jsonl: {len(rows)} lines, step 30 lr {rows[29]['lr']:.3g}")
PY
# A metrics.jsonl that cannot be written is a one-line error before training, not a run without it.
mkdir -p "$WORK/blocked/metrics.jsonl"
train "$WORK/blocked.log" "${SMALL[@]}" --training.steps 1 --job.dump_folder "$WORK/blocked"
[[ $RC -ne 0 ]] && grep -qx "error: cannot write $WORK/blocked/metrics.jsonl: Is a directory" "$WORK/blocked.log" &&
  ! grep -q "Training starts" "$WORK/blocked.log" || { cat "$WORK/blocked.log"; fail "unwritable metrics.jsonl"; }
echo "PASS"
