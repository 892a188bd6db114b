#!/usr/bin/env bash
# Context parallelism over Gloo ranks on the same global batch of 8 sequences of 64: cp2 and cp4
# with each rotate method, contiguous chunks, FSDP2 x CP2, TP2 x CP2, HSDP 2 x CP2 without
# dp_shard, FSDP2 x TP2 x CP2 (8 ranks), PP2 x CP2 and CP2 with full activation checkpointing give
# the same loss and grad_norm as one rank at each of 5 steps within 1e-5 relative, from one seed
# checkpoint; cp2's step-5 checkpoint resumes on one rank and under FSDP2 x CP2; TorchTitan's cp
# integration cases run to the end; bad settings are one-line errors.
source "$(dirname "$0")/lib.sh"
LAYOUT_ARGS=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
             --lr_scheduler.decay_ratio 0 --checkpoint.enable --checkpoint.interval 5 --checkpoint.no-last_save_model_only)
make_seed
cp_() { echo --parallelism.context_parallel_degree "$1" --parallelism.context_parallel_rotate_method "$2"; }

layout_run one 1 5 --training.local_batch_size 8
layout_run cp2_allgather 2 10 $(degrees 1 1) $(cp_ 2 allgather) --training.local_batch_size 8
grep -q "Applied Context Parallelism to the model: 2 ranks, load balancer headtail, rotate method allgather" \
  "$WORK/cp2_allgather.log" || fail "cp2 did not apply context parallelism"
layout_run cp2_alltoall 2 5 $(degrees 1 1) $(cp_ 2 alltoall) --training.local_batch_size 8
layout_run cp4_allgather 4 5 $(degrees 1 1) $(cp_ 4 allgather) --training.local_batch_size 8
layout_run cp4_alltoall 4 5 $(degrees 1 1) $(cp_ 4 alltoall) --training.local_batch_size 8
layout_run cp2_contiguous 2 5 $(degrees 1 1) $(cp_ 2 alltoall) --training.local_batch_size 8 \
  --parallelism.context_parallel_load_balancer None
layout_run fsdp2_cp2 4 5 $(degrees 1 2) $(cp_ 2 allgather) --training.local_batch_size 4
layout_run tp2_cp2 4 5 $(degrees 1 1) $(cp_ 2 alltoall) --parallelism.tensor_parallel_degree 2 --training.local_batch_size 8
layout_run hsdp_cp2 4 5 $(degrees 2 1) $(cp_ 2 allgather) --training.local_batch_size 4
layout_run pp2_cp2 4 5 $(degrees 1 1) $(cp_ 2 alltoall) --parallelism.pipeline_parallel_degree 2 \
  --parallelism.pipeline_parallel_schedule 1F1B --training.local_batch_size 8
layout_run cp2_ac 2 5 $(degrees 1 1) $(cp_ 2 alltoall) --training.local_batch_size 8 --activation_checkpoint.mode full
layout_run fsdp2_tp2_cp2 8 5 $(degrees 1 2) $(cp_ 2 allgather) --parallelism.tensor_parallel_degree 2 \
  --training.local_batch_size 4
for name in cp2_allgather cp2_alltoall cp4_allgather cp4_alltoall cp2_contiguous fsdp2_cp2 tp2_cp2 hsdp_cp2 pp2_cp2 cp2_ac \
            fsdp2_tp2_cp2; do
  near "$WORK/one.metrics" "$WORK/$name.metrics" || fail "$name differs from one rank"
done

# The step-5 checkpoint of cp2 continues its own curve on one rank and under FSDP2 x CP2.
layout_resume cp2_allgather cp2_to_one 1 6 cp2_allgather --training.local_batch_size 8
layout_resume cp2_allgather cp2_to_fsdp2_cp2 4 6 cp2_allgather $(degrees 1 2) $(cp_ 2 alltoall) --training.local_batch_size 4

# TorchTitan's cp integration cases (features.py at 238fa9953), to the end: 2 steps of CPU-sized sequences.
CASE_ARGS=(--training.seq_len 64 --training.steps 2)
case_run cp_allgather 4 $(cp_ 4 allgather)
case_run cp_alltoall 4 $(cp_ 4 alltoall)
case_run fsdp_cp 4 $(degrees 1 2) --parallelism.context_parallel_degree 2
case_run hsdp_cp_without_dp_shard 4 $(degrees 2 1) --parallelism.context_parallel_degree 2
case_run hsdp_cp_with_dp_shard 8 $(degrees 2 2) --parallelism.context_parallel_degree 2
case_run fsdp_tp_cp 8 $(degrees 1 2) --parallelism.tensor_parallel_degree 2 --parallelism.context_parallel_degree 2

# Bad settings: one line each, naming the values.
bad() {  # bad NGPU MESSAGE ARGS...
  local ngpu="$1" message="$2"; shift 2
  NGPU=$ngpu train "$WORK/bad.log" "${SMALL[@]}" --training.steps 1 --job.dump_folder "$WORK/bad" "$@"
  [[ $RC -ne 0 ]] && grep -qF "$message" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no '$message'"; }
}
bad 2 "Sequence length 66 must be divisible by the product of TP degree (1) and 2 * CP degree (2)." \
  $(degrees 1 1) --parallelism.context_parallel_degree 2 --training.seq_len 66
bad 2 "parallelism.context_parallel_load_balancer 'ptrr' is for FlexAttention" $(degrees 1 1) \
  --parallelism.context_parallel_degree 2 --parallelism.context_parallel_load_balancer ptrr
bad 2 "parallelism.context_parallel_rotate_method = 'ring' is not valid; valid values: allgather, alltoall" \
  $(degrees 1 1) --parallelism.context_parallel_degree 2 --parallelism.context_parallel_rotate_method ring
echo "PASS"
