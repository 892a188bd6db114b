#!/usr/bin/env bash
# Tensor parallelism (sequence parallel, loss parallel) over Gloo ranks on the same global batch of
# 8 sequences: tp2, tp2 without loss parallel, tp4, FSDP2 x TP2, HSDP 2x2 x TP2 (8 ranks) and tp2
# with full activation checkpointing and gradient accumulation give the same loss and grad_norm as
# one rank at each of 5 steps within 1e-5 relative, from one seed checkpoint and from the seed
# alone; FSDP4's step-5 checkpoint resumes under FSDP2 x TP2 and TP2, and TP2's in one rank; a TP
# run's Hugging Face export equals one rank's weights; TorchTitan's 2d_eager, hsdp+tp and
# optional_checkpoint cases run to the end; bad degrees are one-line errors.
source "$(dirname "$0")/lib.sh"
LAYOUT_ARGS=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
             --lr_scheduler.decay_ratio 0 --checkpoint.enable --checkpoint.interval 5 --checkpoint.no-last_save_model_only)
make_seed
tp() { echo --parallelism.tensor_parallel_degree "$1"; }

layout_run one 1 5 --training.local_batch_size 8
layout_run fsdp4 4 10 $(degrees 1 4) --training.local_batch_size 2
layout_run tp2 2 5 $(degrees 1 1) $(tp 2) --training.local_batch_size 8
grep -q "Applied Tensor Parallelism to the model: 2 ranks, sequence parallel, loss parallel on" "$WORK/tp2.log" ||
  fail "tp2 did not apply tensor parallelism"
layout_run tp2_no_loss_parallel 2 5 $(degrees 1 1) $(tp 2) --training.local_batch_size 8 --parallelism.disable_loss_parallel
layout_run tp4 4 5 $(degrees 1 1) $(tp 4) --training.local_batch_size 8
layout_run fsdp2_tp2 4 5 $(degrees 1 2) $(tp 2) --training.local_batch_size 4
grep -q "Training state on this rank: .* (0.25[0-9] of the unsharded" "$WORK/fsdp2_tp2.log" ||
  { grep "Training state" "$WORK/fsdp2_tp2.log"; fail "FSDP2 x TP2 does not hold about a quarter of the training state"; }
layout_run hsdp_tp2 8 5 $(degrees 2 2) $(tp 2) --training.local_batch_size 2
layout_run tp2_ac_accum 2 5 $(degrees 1 1) $(tp 2) --training.local_batch_size 4 --activation_checkpoint.mode full
grep -q "gradient accumulation steps 2" "$WORK/tp2_ac_accum.log" || fail "the accumulation run does not accumulate"
for name in fsdp4 tp2 tp2_no_loss_parallel tp4 fsdp2_tp2 hsdp_tp2 tp2_ac_accum; do
  near "$WORK/one.metrics" "$WORK/$name.metrics" || fail "$name differs from one rank"
done

# Without a seed checkpoint: every layout starts from the same weights of the same seed.
for spec in "fresh_one 1 --training.local_batch_size 8" "fresh_fsdp2_tp2 4 $(degrees 1 2) $(tp 2) --training.local_batch_size 4"; do
  read -r name ngpu rest <<<"$spec"
  # shellcheck disable=SC2086
  NGPU=$ngpu train "$WORK/$name.log" "${SMALL[@]}" --training.seq_len 64 \
    --training.global_batch_size 8 --training.mixed_precision_param float32 --training.steps 3 --job.dump_folder "$WORK/$name" $rest
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "$name exited $RC"; }
  metrics "$WORK/$name" >"$WORK/$name.metrics"
done
near "$WORK/fresh_one.metrics" "$WORK/fresh_fsdp2_tp2.metrics" || fail "FSDP2 x TP2 without a seed checkpoint differs from one rank"

# Checkpoints move between layouts: steps 6.. continue the FSDP4 run.
layout_resume fsdp4 fsdp4_to_fsdp2_tp2 4 10 fsdp4 $(degrees 1 2) $(tp 2) --training.local_batch_size 4
layout_resume fsdp4 fsdp4_to_tp2 2 6 fsdp4 $(degrees 1 1) $(tp 2) --training.local_batch_size 8
layout_resume tp2 tp2_to_one 1 6 fsdp4 --training.local_batch_size 8

# The Hugging Face export of an FSDP2 x TP2 run gathers every piece: the same file as one rank's.
hf_export hf_one 1 --training.local_batch_size 8
hf_export hf_tp 4 $(degrees 1 2) $(tp 2) --training.local_batch_size 4
same_hf_export hf_one hf_tp || fail "the TP run's HF export differs from one rank's"

# TorchTitan's integration cases with TP (features.py at 238fa9953), to the end with CPU-sized sequences.
case_run 2d_eager 4 $(tp 2)
case_run hsdp_tp 8 $(degrees 2 2) $(tp 2)
case_run optional_checkpoint 4 --checkpoint.enable --training.steps 10
case_run optional_checkpoint 4 --checkpoint.enable --checkpoint.exclude_from_loading lr_scheduler,dataloader,optimizer \
  $(tp 2) --training.steps 20
grep -q "Loaded checkpoint .*step-10 (step 10): model, train_state; skipped optimizer, lr_scheduler, dataloader" \
  "$WORK/optional_checkpoint.log" || fail "optional_checkpoint did not reshard step-10 into FSDP2 x TP2"

# Bad degrees: one line each, naming the values.
bad() {  # bad NGPU MESSAGE ARGS...
  local ngpu="$1" message="$2"; shift 2
  NGPU=$ngpu train "$WORK/bad.log" "${SMALL[@]}" --training.steps 1 --job.dump_folder "$WORK/bad" "$@"
  [[ $RC -ne 0 ]] && grep -qF "$message" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no '$message'"; }
}
bad 3 "parallelism.tensor_parallel_degree 3 must divide n_heads (16)" $(degrees 1 1) $(tp 3) --training.seq_len 96
bad 2 "Sequence length 66 must be divisible by the product of TP degree (2) and 2 * CP degree (1)." \
  $(degrees 1 1) $(tp 2) --training.seq_len 66
bad 4 "does not combine with tensor_parallel_degree > 1" $(degrees 2 1) $(tp 2)
echo "PASS"
