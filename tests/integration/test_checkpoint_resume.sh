#!/usr/bin/env bash
# TorchTitan's full_checkpoint: 20 steps straight equal 10 steps + resume to 20, bit for bit;
# raising training.steps on resume after a 10-step run continues at step 11; load_step rules.
source "$(dirname "$0")/lib.sh"
CK=("${SMALL[@]}" --checkpoint.enable --checkpoint.interval 10 --checkpoint.no-last_save_model_only)

train "$WORK/straight.log" "${CK[@]}" --training.steps 20 --job.dump_folder "$WORK/straight"
[[ $RC -eq 0 ]] || { cat "$WORK/straight.log"; fail "straight run exited $RC"; }
# The first half runs with the 20-step schedule, so the two halves are the straight run cut in two.
train "$WORK/half1.log" "${CK[@]}" --training.steps 10 --lr_scheduler.total_steps 20 --job.dump_folder "$WORK/resumed"
[[ $RC -eq 0 ]] || { cat "$WORK/half1.log"; fail "first half exited $RC"; }
[[ -f $WORK/resumed/checkpoint/step-10/.metadata ]] || fail "no step-10 checkpoint"
# Resuming at or past training.steps trains nothing, and says so.
train "$WORK/done.log" "${CK[@]}" --training.steps 10 --job.dump_folder "$WORK/resumed"
[[ $RC -eq 0 ]] && grep -q "the checkpoint is at step 10, not before training.steps 10: nothing to train or save" "$WORK/done.log" ||
  { cat "$WORK/done.log"; fail "a finished run resumed without a word"; }
train "$WORK/half2.log" "${CK[@]}" --training.steps 20 --lr_scheduler.total_steps 20 --job.dump_folder "$WORK/resumed"
[[ $RC -eq 0 ]] || { cat "$WORK/half2.log"; fail "second half exited $RC"; }
grep -q "Training starts at step 11" "$WORK/half2.log" || fail "resume did not start at step 11"
grep -q "Loaded checkpoint .*step-10 (step 10): model, optimizer, lr_scheduler, dataloader, train_state" "$WORK/half2.log" ||
  fail "resume did not load every part"
full() { sed -nE 's/.*(step: *[0-9]+ +loss: +[0-9.]+ +grad_norm: +[0-9.]+).*/\1/p' "$1"; }
diff <(full "$WORK/straight.log" | tail -10) <(full "$WORK/half2.log") || fail "resumed steps 11..20 differ from the straight run"

# TorchTitan's own flow: a 10-step run, then --training.steps 20 (the schedule is rebuilt).
train "$WORK/tt1.log" "${CK[@]}" --training.steps 10 --job.dump_folder "$WORK/tt"
train "$WORK/tt2.log" "${CK[@]}" --training.steps 20 --job.dump_folder "$WORK/tt"
[[ $RC -eq 0 ]] || { cat "$WORK/tt2.log"; fail "raised-steps resume exited $RC"; }
grep -q "Training starts at step 11" "$WORK/tt2.log" || fail "raised-steps resume did not start at step 11"
[[ $(losses "$WORK/tt2.log" | wc -l) -eq 10 ]] || fail "raised-steps resume did not run steps 11..20"
[[ -f $WORK/tt/checkpoint/step-20/.metadata ]] || fail "no step-20 after the raised-steps resume"

# load_step: an existing step resumes there; a missing one is an error, never a fresh start.
train "$WORK/ls.log" "${CK[@]}" --training.steps 12 --checkpoint.load_step 10 --job.dump_folder "$WORK/tt"
grep -q "Training starts at step 11" "$WORK/ls.log" || { cat "$WORK/ls.log"; fail "load_step 10 did not resume at 11"; }
train "$WORK/missing.log" "${CK[@]}" --training.steps 12 --checkpoint.load_step 7 --job.dump_folder "$WORK/tt"
[[ $RC -ne 0 ]] || fail "missing load_step did not fail"
grep -q "^error: --checkpoint.load_step=7 but .*step-7 does not exist (complete steps: 10, 12, 20)" "$WORK/missing.log" ||
  { cat "$WORK/missing.log"; fail "missing load_step message"; }
echo "PASS"
