#!/usr/bin/env bash
# [validation]: the `validate step: N loss: X` lines (at step 1 and every freq steps) of one rank equal
# FSDP2, DDP2, TP2, CP2 and PP2 (1F1B, Interleaved1F1B, ZBVZeroBubble) within 1e-5 relative on the same global validation batch, and the
# Llama 4 MoE model's with EP2; validation leaves training bit for bit unchanged (the MoE balancing
# biases included: the losses would differ with them); steps -1 reads the whole finite data, again
# at every validation; the loss goes to TensorBoard; bad settings are one-line errors naming the key.
source "$(dirname "$0")/lib.sh"
RUN=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
     --metrics.peak_flops 1e12 --training.steps 2)
VAL=(--validation.enable --validation.dataset janeausten --validation.seq_len 64 --validation.freq 2 --validation.steps 2)

# run NAME NGPU ARGS...: full-precision training metrics in $WORK/NAME.metrics, validation losses
# in $WORK/NAME.val (both from metrics.jsonl).
run() {
  local name="$1" ngpu="$2"; shift 2
  NGPU=$ngpu train "$WORK/$name.log" "${RUN[@]}" --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "$name exited $RC"; }
  metrics "$WORK/$name" >"$WORK/$name.metrics"
  validation_losses "$WORK/$name" >"$WORK/$name.val"
}
# same_validation A B: both validated at the same steps, each loss within 1e-5 relative.
same_validation() {
  [[ $(cut -d' ' -f1 "$WORK/$1.val") == $(cut -d' ' -f1 "$WORK/$2.val") && -s "$WORK/$1.val" ]] ||
    fail "$2 validated at other steps than $1: $(cat "$WORK/$2.val")"
  paste "$WORK/$1.val" "$WORK/$2.val" | awk '{d = $2 - $4; if (d < 0) d = -d; if (d > 1e-5 * $2) {print; bad = 1}} END {exit bad}' ||
    fail "$2's validation loss differs from $1's"
}

# One rank: validation at steps 1 and 2, logged and sent to TensorBoard.
run one 1 --training.local_batch_size 8 "${VAL[@]}" --validation.local_batch_size 8 --metrics.enable_tensorboard
[[ $(cut -d' ' -f1 "$WORK/one.val" | paste -sd,) == 1,2 ]] || fail "one rank validated at steps $(cat "$WORK/one.val")"
[[ $(grep -cE "validate step: +[12]  loss: +[0-9]+\.[0-9]{4}  memory: +[0-9.]+GiB\([0-9.]+%\)  tps: [0-9,]+$" "$WORK/one.log") -eq 2 ]] ||
  { grep "validate" "$WORK/one.log"; fail "validate log lines"; }
# metrics.jsonl: each validation a line of its own keys, after its step's training line, equal to the log line.
"$TITAN_PYTHON" - "$WORK/one/metrics.jsonl" "$WORK/one.log" <<'PY' || fail "validation lines in metrics.jsonl"
import json, re, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
assert [(r["step"], "loss" in r) for r in rows] == [(1, True), (1, False), (2, True), (2, False)], rows
logged = [l for l in open(sys.argv[2]) if "validate step:" in l]
for r, l in zip([r for r in rows if "validation_loss" in r], logged):
    assert list(r) == ["step", "validation_loss", "validation_tps", "validation_memory_gib", "validation_memory_pct"], r
    loss = float(re.search(r"loss: +([0-9.]+)", l).group(1))
    assert f"{r['validation_loss']:.4f}" == f"{loss:.4f}", (r, l)
PY
"$TITAN_PYTHON" - "$(echo "$WORK"/one/tb/*/events.*)" "$WORK/one.val" <<'PY'
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
tb = {e.step: e.value for e in acc.Scalars("validation_metrics/loss")}
logged = {int(s): float(v) for s, v in (l.split() for l in open(sys.argv[2]))}
assert tb.keys() == logged.keys() and all(abs(tb[s] - logged[s]) < 1e-6 * logged[s] for s in tb), (tb, logged)
for tag in ["validation_metrics/throughput(tps)", "validation_metrics/memory/max_reserved(GiB)"]:
    assert sorted(e.step for e in acc.Scalars(tag)) == [1, 2], tag
print("TensorBoard validation_metrics/loss:", tb)
PY

# Every layout, on the same global batches of training and validation data.
run noval 1 --training.local_batch_size 8
cmp "$WORK/one.metrics" "$WORK/noval.metrics" || fail "validation changed the training losses or grad norms"
run fsdp2 2 $(degrees 1 2) --training.local_batch_size 4 "${VAL[@]}" --validation.local_batch_size 4
run ddp2 2 $(degrees 2 1) --training.local_batch_size 4 "${VAL[@]}" --validation.local_batch_size 4
run tp2 2 --parallelism.tensor_parallel_degree 2 --training.local_batch_size 8 "${VAL[@]}" --validation.local_batch_size 8
run cp2 2 --parallelism.context_parallel_degree 2 --training.local_batch_size 8 "${VAL[@]}" --validation.local_batch_size 8
run pp2 2 --parallelism.pipeline_parallel_degree 2 --parallelism.pipeline_parallel_schedule 1F1B \
  --training.local_batch_size 8 "${VAL[@]}" --validation.local_batch_size 8
for schedule in Interleaved1F1B ZBVZeroBubble; do  # two stages per rank, looping and V-shaped
  run "pp2_$schedule" 2 --parallelism.pipeline_parallel_degree 2 --parallelism.pipeline_parallel_schedule "$schedule" \
    --training.local_batch_size 8 "${VAL[@]}" --validation.local_batch_size 8
done
for name in fsdp2 ddp2 tp2 cp2 pp2 pp2_Interleaved1F1B pp2_ZBVZeroBubble; do
  near "$WORK/one.metrics" "$WORK/$name.metrics" || fail "$name's training differs from one rank"
  same_validation one "$name"
done

# steps -1: the whole of a finite set, from its start at every validation. 20 windows of 65 tokens
# make 2 global batches of 8 (4 windows left out); with lr 0 the weights stay put, so both
# validations see the same loss, that of steps 2.
"$TITAN_PYTHON" -c "import numpy, sys; numpy.save(sys.argv[1], (numpy.arange(20 * 65 + 7) * 7919 % 2000).astype('<i8'))" "$WORK/tiny.npy"
TINY=(--validation.enable --validation.dataset_path "$WORK/tiny.npy" --validation.seq_len 64 --validation.freq 1 --optimizer.lr 0)
run all_one 1 --training.local_batch_size 8 "${TINY[@]}" --validation.steps -1 --validation.local_batch_size 8
run all_fsdp2 2 $(degrees 1 2) --training.local_batch_size 4 "${TINY[@]}" --validation.steps -1 --validation.local_batch_size 4
run two_batches 1 --training.local_batch_size 8 "${TINY[@]}" --validation.steps 2 --validation.local_batch_size 8 --training.steps 1
same_validation all_one all_fsdp2
[[ $(cut -d' ' -f2 "$WORK/all_one.val" | uniq | wc -l) -eq 1 ]] || fail "steps -1 validations differ: $(cat "$WORK/all_one.val")"
[[ $(head -1 "$WORK/all_one.val") == $(cat "$WORK/two_batches.val") ]] || fail "steps -1 is not the 2 whole global batches"

# Llama 4 MoE: EP2 equals one rank; validation does not move the balancing biases (nor the losses).
MOE=(--lr_scheduler.decay_ratio 0 --training.steps 4)
CONFIG_FILE=./configs/llama4_debug.toml run moe_one 1 --training.local_batch_size 8 "${MOE[@]}" "${VAL[@]}" --validation.local_batch_size 8
CONFIG_FILE=./configs/llama4_debug.toml run moe_noval 1 --training.local_batch_size 8 "${MOE[@]}"
CONFIG_FILE=./configs/llama4_debug.toml run moe_ep2 2 $(degrees 1 2) --parallelism.expert_parallel_degree 2 \
  --training.local_batch_size 4 "${MOE[@]}" "${VAL[@]}" --validation.local_batch_size 4
cmp "$WORK/moe_one.metrics" "$WORK/moe_noval.metrics" || fail "validation changed MoE training (its expert biases)"
near "$WORK/moe_one.metrics" "$WORK/moe_ep2.metrics" || fail "MoE EP2 training differs from one rank"
same_validation moe_one moe_ep2

# Bad settings: one error line naming the key, before training.
bad() {
  local expected="$1"; shift
  train "$WORK/bad.log" "${RUN[@]}" --job.dump_folder "$WORK/bad" "$@"
  [[ $RC -ne 0 && $(grep -c "error" "$WORK/bad.log") -eq 1 ]] && grep -qF "$expected" "$WORK/bad.log" &&
    ! grep -q "Training starts" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "$* did not fail with: $expected"; }
}
bad "validation.freq must be positive, got 0" "${VAL[@]}" --validation.freq 0
bad "validation.freq must be positive, got -3" "${VAL[@]}" --validation.freq -3
bad "validation.local_batch_size must be positive, got 0" "${VAL[@]}" --validation.local_batch_size 0
bad "validation.steps must be positive or -1 (the whole dataset), got 0" "${VAL[@]}" --validation.steps 0
bad "validation.dataset 'c4_validation' is not a bundled dataset (bundled: janeausten)" --validation.enable
bad "validation.dataset_path: dataset path '$WORK/none.txt' does not exist" "${VAL[@]}" --validation.dataset_path "$WORK/none.txt"
bad "validation.seq_len 128 exceeds training.seq_len 64" "${VAL[@]}" --validation.seq_len 128
echo "PASS"
