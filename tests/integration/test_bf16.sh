#!/usr/bin/env bash
# bf16 mixed precision (FSDP2: bf16 gathered weights and compute, fp32 master weights, optimizer
# and gradient reduction) tracks fp32 within 2% at every one of 50 steps on the bundled corpus,
# and both learn.
source "$(dirname "$0")/lib.sh"
ARGS=("${SMALL[@]}" --training.seq_len 64 --training.local_batch_size 2 --training.steps 50)
for mp in float32 bfloat16; do
  NGPU=2 train "$WORK/$mp.log" "${ARGS[@]}" \
    --training.mixed_precision_param "$mp" --job.dump_folder "$WORK/$mp"
  [[ $RC -eq 0 ]] || { cat "$WORK/$mp.log"; fail "$mp run exited $RC"; }
  metrics "$WORK/$mp" >"$WORK/$mp.metrics"
done
grep -q "param dtype bfloat16, reduce dtype float32" "$WORK/bfloat16.log" || fail "bf16 run is not mixed precision"
paste "$WORK/float32.metrics" "$WORK/bfloat16.metrics" |
  awk '{d = ($2 - $5) / $2; if (d < 0) d = -d; if (d > m) m = d; if (d > 0.02) {print "step " $1 ": fp32 " $2 " bf16 " $5; bad = 1}}
       END {printf "largest relative difference %.4f over %d steps\n", m, NR; exit bad || NR != 50}' ||
  fail "bf16 does not track fp32 within 2%"
for mp in float32 bfloat16; do
  awk 'NR == 1 {first = $2} END {exit !($2 < first - 1.5)}' "$WORK/$mp.metrics" || fail "$mp did not learn"
done
echo "PASS"
