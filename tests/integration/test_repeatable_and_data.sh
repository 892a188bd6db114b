#!/usr/bin/env bash
# debug.seed makes runs repeatable; activation checkpointing leaves the losses bit-identical;
# gradient accumulation equals the same global batch in one go;
# pre-tokenized .npy data (as numpy writes it) trains without a tokenizer.
source "$(dirname "$0")/lib.sh"

train "$WORK/a.log" "${SMALL[@]}" --training.steps 4 --job.dump_folder "$WORK/a"
[[ $RC -eq 0 ]] || { cat "$WORK/a.log"; fail "run a exited $RC"; }
train "$WORK/b.log" "${SMALL[@]}" --training.steps 4 --job.dump_folder "$WORK/b"
diff <(losses "$WORK/a.log") <(losses "$WORK/b.log") || fail "same seed, different losses"

for ac in "--activation_checkpoint.mode full" "--activation_checkpoint.mode selective --activation_checkpoint.selective_ac_option 2"; do
  # shellcheck disable=SC2086
  train "$WORK/ac.log" "${SMALL[@]}" --training.steps 4 --job.dump_folder "$WORK/ac" $ac
  [[ $RC -eq 0 ]] || { cat "$WORK/ac.log"; fail "run with $ac exited $RC"; }
  grep -q "activation checkpointing to" "$WORK/ac.log" || fail "$ac: not applied"
  diff <(losses "$WORK/a.log") <(losses "$WORK/ac.log") || fail "$ac changed the losses"
done

# Global batch 4 as 2 accumulation steps of 2: same losses to float tolerance.
train "$WORK/ga.log" "${SMALL[@]}" --training.steps 4 --training.local_batch_size 2 --training.global_batch_size 4 \
  --job.dump_folder "$WORK/ga"
[[ $RC -eq 0 ]] || { cat "$WORK/ga.log"; fail "accumulation run exited $RC"; }
grep -q "gradient accumulation steps 2" "$WORK/ga.log" || fail "accumulation steps not logged"
paste <(losses "$WORK/a.log") <(losses "$WORK/ga.log") |
  awk '{d = $2 - $4; if (d < 0) d = -d; if (d > 2e-4) {print "step " $1 ": " $2 " vs " $4; bad = 1}} END {exit bad}' ||
  fail "gradient accumulation changed the losses"

"$TITAN_PYTHON" -c "import numpy as np; np.save('$WORK/tokens.npy', (np.arange(200000) * 7919 % 2000).astype(np.uint16))"
train "$WORK/npy.log" "${SMALL[@]}" --training.steps 2 --training.dataset_path "$WORK/tokens.npy" \
  --model.hf_assets_path /nonexistent --job.dump_folder "$WORK/npy"
[[ $RC -eq 0 ]] || { cat "$WORK/npy.log"; fail ".npy run exited $RC"; }
[[ $(losses "$WORK/npy.log" | wc -l) -eq 2 ]] || fail ".npy run logged no losses"
echo "PASS"
