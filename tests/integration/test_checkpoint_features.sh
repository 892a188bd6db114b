#!/usr/bin/env bash
# keep_latest_k, exclude_from_loading, model-only exports (fp32, bf16) read from Python, the
# single-file export, seed checkpoints, initial loads and the rules that are errors.
source "$(dirname "$0")/lib.sh"
CK=("${SMALL[@]}" --checkpoint.enable --checkpoint.no-last_save_model_only)
TOOL="${TITAN_BUILD_DIR:-$ROOT/build}/titan_checkpoint"

# keep_latest_k=2 after saves at 5, 10, 15, 20 leaves step-15 and step-20.
train "$WORK/k.log" "${CK[@]}" --training.steps 20 --checkpoint.interval 5 --checkpoint.keep_latest_k 2 \
  --job.dump_folder "$WORK/k"
[[ $RC -eq 0 ]] || { cat "$WORK/k.log"; fail "keep_latest_k run exited $RC"; }
[[ "$(ls "$WORK/k/checkpoint" | tr '\n' ' ')" == "step-15 step-20 " ]] || fail "kept: $(ls "$WORK/k/checkpoint")"

# exclude_from_loading dataloader,lr_scheduler,optimizer: only the model comes back. Its step-11
# loss then equals step 1 of a fresh-data run from the same weights (a model-only initial load).
mkdir -p "$WORK/k2/checkpoint" && cp -r "$WORK/k/checkpoint/step-15" "$WORK/k2/checkpoint/"
train "$WORK/x.log" "${CK[@]}" --training.steps 16 --checkpoint.exclude_from_loading dataloader,lr_scheduler,optimizer \
  --job.dump_folder "$WORK/k2"
[[ $RC -eq 0 ]] || { cat "$WORK/x.log"; fail "excluding run exited $RC"; }
grep -q "Loaded checkpoint .*step-15 (step 15): model, train_state; skipped optimizer, lr_scheduler, dataloader" "$WORK/x.log" ||
  { cat "$WORK/x.log"; fail "exclusions not reported"; }
train "$WORK/init.log" "${CK[@]}" --training.steps 1 --checkpoint.initial_load_path "$WORK/k/checkpoint/step-15" \
  --job.dump_folder "$WORK/init"
[[ $RC -eq 0 ]] || { cat "$WORK/init.log"; fail "initial load exited $RC"; }
grep -q "initial load from" "$WORK/init.log" || fail "no initial load"
[[ "$(losses "$WORK/x.log" | awk '$1 == 16 {print $2}')" == "$(losses "$WORK/init.log" | awk '$1 == 1 {print $2}')" ]] ||
  fail "excluded-state resume does not use the restored weights on fresh data"

# last_save_model_only in fp32 and bf16: only model keys, in that dtype; torch.load of the export agrees.
for dtype in float32 bfloat16; do
  train "$WORK/m.log" "${SMALL[@]}" --checkpoint.enable --checkpoint.last_save_model_only --checkpoint.export_dtype $dtype \
    --training.steps 3 --job.dump_folder "$WORK/m_$dtype"
  [[ $RC -eq 0 ]] || { cat "$WORK/m.log"; fail "model-only $dtype run exited $RC"; }
  grep -q "checkpoint.last_save_model_only: the last save (step 3) holds only the model, which no run can resume from" \
    "$WORK/m.log" || fail "no start-up word on last_save_model_only"
  "$TOOL" to-torch "$WORK/m_$dtype/checkpoint/step-3" "$WORK/m_$dtype.pt" >/dev/null
  "$TITAN_PYTHON" tests/reference/check_checkpoint_export.py "$WORK/m_$dtype/checkpoint/step-3" "$WORK/m_$dtype.pt" $dtype 6 ||
    fail "model-only $dtype export check"
  "$TOOL" inspect "$WORK/m_$dtype/checkpoint/step-3" >"$WORK/inspect.txt"
  grep -q "model_only: true" "$WORK/inspect.txt" || fail "inspect lacks model_only"
done
# Resuming from a model-only export is a clear error.
train "$WORK/mo.log" "${SMALL[@]}" --checkpoint.enable --training.steps 5 --job.dump_folder "$WORK/m_float32"
[[ $RC -ne 0 ]] && grep -q "^error: checkpoint .*step-3 holds only the model" "$WORK/mo.log" ||
  { cat "$WORK/mo.log"; fail "resume from model-only did not fail clearly"; }

# Seed checkpoint: created once, two runs from it have the same step-1 loss without a seed.
train "$WORK/seed.log" --checkpoint.enable --checkpoint.create_seed_checkpoint --job.dump_folder "$WORK/seed"
[[ $RC -eq 0 && -f $WORK/seed/checkpoint/step-0/.metadata ]] || { cat "$WORK/seed.log"; fail "seed checkpoint not created"; }
grep -q "Created seed checkpoint" "$WORK/seed.log" || fail "no seed log line"
! grep -q "step:" "$WORK/seed.log" || fail "the seed run trained"
NOSEED=(--training.seq_len 128 --training.local_batch_size 4 --metrics.disable_color_printing --checkpoint.enable)
for run in 1 2; do
  rm -rf "$WORK/from_seed_$run" && mkdir -p "$WORK/from_seed_$run" && cp -r "$WORK/seed/checkpoint" "$WORK/from_seed_$run/"
  train "$WORK/s$run.log" "${NOSEED[@]}" --training.steps 1 --checkpoint.load_only --job.dump_folder "$WORK/from_seed_$run"
  [[ $RC -eq 0 ]] || { cat "$WORK/s$run.log"; fail "run $run from the seed exited $RC"; }
  grep -q "step-0 (step 0): model; skipped optimizer, lr_scheduler, dataloader, train_state" "$WORK/s$run.log" ||
    fail "step-0 did not load the model only"
done
[[ "$(losses "$WORK/s1.log")" == "$(losses "$WORK/s2.log")" ]] || fail "runs from one seed differ at step 1"
[[ ! -d $WORK/from_seed_1/checkpoint/step-1 ]] || fail "load_only saved a checkpoint"
train "$WORK/e.log" --checkpoint.create_seed_checkpoint --job.dump_folder "$WORK/e"
[[ $RC -ne 0 ]] && grep -q "needs --checkpoint.enable" "$WORK/e.log" || fail "seed without enable"

# Excluding the model, or the optimizer without the schedule, are errors.
train "$WORK/e.log" "${CK[@]}" --checkpoint.exclude_from_loading model --job.dump_folder "$WORK/e"
[[ $RC -ne 0 ]] && grep -q "cannot exclude 'model'" "$WORK/e.log" || fail "excluding model"
train "$WORK/e.log" "${CK[@]}" --checkpoint.exclude_from_loading optimizer --job.dump_folder "$WORK/e"
[[ $RC -ne 0 ]] && grep -q "requires excluding 'lr_scheduler'" "$WORK/e.log" || fail "excluding optimizer alone"
# A checkpoint of another model with the same tensor shapes (debugmodel's 16 heads of 16 as 8 of
# 32) is refused by the model description its manifest records; a changed manifest is caught.
"$TOOL" to-hf "$WORK/k/checkpoint/step-20" "$WORK/heads8" >/dev/null
"$TITAN_PYTHON" - "$WORK/heads8/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(num_attention_heads=8, num_key_value_heads=8, head_dim=32)
json.dump(c, open(sys.argv[1], "w"))
PY
cp tests/assets/tokenizer/tokenizer.model "$WORK/heads8/"
train "$WORK/h.log" "${CK[@]}" --model.flavor from_hf --model.hf_assets_path "$WORK/heads8" \
  --checkpoint.initial_load_path "$WORK/k/checkpoint/step-20" --checkpoint.initial_load_model_only --job.dump_folder "$WORK/h"
[[ $RC -ne 0 ]] && grep -q "step-20/.metadata: head_dim = 16 but this model has 32 (the checkpoint holds another model" \
  "$WORK/h.log" || { cat "$WORK/h.log"; fail "another model's checkpoint"; }
sed -i 's/"step": 20/"step": 29/' "$WORK/k/checkpoint/step-20/.metadata"
train "$WORK/h.log" "${CK[@]}" --checkpoint.initial_load_path "$WORK/k/checkpoint/step-20" --job.dump_folder "$WORK/h2"
[[ $RC -ne 0 ]] && grep -q "its manifest_crc32 does not match its text" "$WORK/h.log" || { cat "$WORK/h.log"; fail "changed manifest"; }
echo "PASS"
