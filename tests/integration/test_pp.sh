#!/usr/bin/env bash
# Pipeline parallelism over Gloo ranks on the same global batch of 8 sequences (8 microbatches of
# one): pp2 with each of the seven schedules and with a CSV order, pp2 x FSDP2, pp2 x TP2,
# pp2 x FSDP2 x TP2 (8 ranks), pp2 x DDP2, pp4 Interleaved1F1B with one layer per stage, zero bubble with
# full activation checkpointing and 1F1B with gradient accumulation give the same loss and grad_norm as
# one rank at each of 5 steps within 1e-5 relative, from one seed checkpoint; pp2 x FSDP2's step-5
# checkpoint resumes on one rank and under pp4; a pp run's Hugging Face export equals one rank's;
# TorchTitan's pp integration cases run to the end; bad pipeline settings are one-line errors; a
# rank killed mid-pipeline ends the job with a line naming it.
source "$(dirname "$0")/lib.sh"
LAYOUT_ARGS=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
             --lr_scheduler.decay_ratio 0 --checkpoint.enable --checkpoint.interval 5 --checkpoint.no-last_save_model_only)
make_seed
pp() { echo --parallelism.pipeline_parallel_degree "$1" --parallelism.pipeline_parallel_schedule "$2"; }
tp() { echo --parallelism.tensor_parallel_degree "$1"; }

layout_run one 1 5 --training.local_batch_size 8
for schedule in GPipe 1F1B Interleaved1F1B LoopedBFS InterleavedZeroBubble ZBVZeroBubble DualPipeV; do
  layout_run "pp2_$schedule" 2 5 $(degrees 1 1) $(pp 2 "$schedule") --training.local_batch_size 8
done
grep -qF "Pipeline schedule InterleavedZeroBubble: 4 stages on 2 ranks (this rank: 0 (tok_embeddings layers.0), 2 (layers.3 layers.4)), 8 microbatches of 1" \
  "$WORK/pp2_InterleavedZeroBubble.log" || fail "the zero-bubble run does not say its stages"
layout_run pp2_csv 2 5 $(degrees 1 1) $(pp 2 PipelineScheduleMulti) --training.local_batch_size 8 \
  --parallelism.pipeline_parallel_schedule_csv tests/assets/custom_schedule.csv
layout_run pp2_fsdp2 4 10 $(degrees 1 2) $(pp 2 1F1B) --training.local_batch_size 4
layout_run pp2_tp2 4 5 $(degrees 1 1) $(pp 2 Interleaved1F1B) $(tp 2) --training.local_batch_size 8
layout_run pp2_fsdp2_tp2 8 5 $(degrees 1 2) $(pp 2 1F1B) $(tp 2) --training.local_batch_size 4
layout_run pp4_looped 4 5 $(degrees 1 1) $(pp 4 Interleaved1F1B) --parallelism.pipeline_parallel_layers_per_stage 1 \
  --training.local_batch_size 8
layout_run pp2_zb_ac 2 5 $(degrees 1 1) $(pp 2 InterleavedZeroBubble) --training.local_batch_size 8 \
  --activation_checkpoint.mode full
layout_run pp2_accum 2 5 $(degrees 1 1) $(pp 2 1F1B) --training.local_batch_size 4
layout_run pp2_ddp2 4 5 $(degrees 2 1) $(pp 2 GPipe) --training.local_batch_size 4
grep -q "gradient accumulation steps 2" "$WORK/pp2_accum.log" || fail "the accumulation run does not accumulate"
for name in pp2_GPipe pp2_1F1B pp2_Interleaved1F1B pp2_LoopedBFS pp2_InterleavedZeroBubble pp2_ZBVZeroBubble \
            pp2_DualPipeV pp2_csv pp2_fsdp2 pp2_tp2 pp2_fsdp2_tp2 pp4_looped pp2_zb_ac pp2_accum pp2_ddp2; do
  near "$WORK/one.metrics" "$WORK/$name.metrics" || fail "$name differs from one rank"
done

# Checkpoints know no stages: pp2 x FSDP2's step-5 checkpoint continues its own curve on one rank and under pp4.
layout_resume pp2_fsdp2 pp2_fsdp2_to_one 1 6 pp2_fsdp2 --training.local_batch_size 8
layout_resume pp2_fsdp2 pp2_fsdp2_to_pp4 4 6 pp2_fsdp2 $(degrees 1 1) $(pp 4 Interleaved1F1B) \
  --parallelism.pipeline_parallel_layers_per_stage 1 --training.local_batch_size 8

# The Hugging Face export of a pp2 x TP2 run holds every stage's weights: the same file as one rank's.
hf_export hf_one 1 --training.local_batch_size 8
hf_export hf_pp 4 $(degrees 1 1) $(pp 2 ZBVZeroBubble) $(tp 2) --training.local_batch_size 8
same_hf_export hf_one hf_pp || fail "the pp run's HF export differs from one rank's"

# TorchTitan's pp integration cases (features.py at 238fa9953), to the end: 2 steps of CPU-sized sequences.
CASE_ARGS=(--training.seq_len 64 --training.steps 2)
case_run pp_gpipe 2 $(pp 2 GPipe) $(degrees 1 1)
case_run pp_1f1b 2 $(pp 2 1F1B) $(degrees 1 1)
case_run pp_dp_1f1b 4 $(pp 2 1F1B) $(degrees 1 2)
case_run pp_dp_1f1b 4 $(pp 2 1F1B) $(degrees 1 2) --parallelism.pipeline_parallel_layers_per_stage 4
case_run pp_dp_gpipe 4 $(pp 2 GPipe) $(degrees 1 2)
case_run pp_tp 4 $(pp 2 1F1B) $(tp 2)
case_run pp_dp_tp 8 $(pp 2 1F1B) $(degrees 1 2) $(tp 2) --checkpoint.enable --checkpoint.no-last_save_model_only
case_run pp_dp_tp 8 $(pp 2 1F1B) $(degrees 1 2) $(tp 2) --checkpoint.enable --training.steps 3
grep -q "Training starts at step 3" "$WORK/pp_dp_tp.log" || fail "pp_dp_tp did not resume from step 2"
case_run pp_looped_1f1b 4 $(pp 4 Interleaved1F1B)
case_run pp_looped_1f1b 4 $(pp 4 Interleaved1F1B) --parallelism.pipeline_parallel_layers_per_stage 1
case_run pp_looped_zero_bubble 4 $(pp 4 InterleavedZeroBubble)
case_run pp_zbv 2 $(pp 2 ZBVZeroBubble)

# Bad pipeline settings: one line each, naming the values.
bad() {  # bad NGPU MESSAGE ARGS...
  local ngpu="$1" message="$2"; shift 2
  NGPU=$ngpu train "$WORK/bad.log" "${SMALL[@]}" --training.steps 1 --job.dump_folder "$WORK/bad" "$@"
  [[ $RC -ne 0 ]] && grep -qF "$message" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no '$message'"; }
}
bad 2 "Number of virtual stages (3) must be divisible by pipeline parallel size (2)" $(pp 2 Interleaved1F1B) \
  --parallelism.pipeline_parallel_layers_per_stage 3
bad 2 "Single stage schedule requires exactly 1 stage per rank, but got 2 stages per rank" $(pp 2 1F1B) \
  --parallelism.pipeline_parallel_layers_per_stage 2
bad 2 "Multi-stage schedule requires at least 2 stages per rank, but got 1 stages per rank" $(pp 2 LoopedBFS) \
  --parallelism.pipeline_parallel_layers_per_stage 4
bad 2 "Batch size 4 must be divisible by microbatch_size 3" $(pp 2 GPipe) --parallelism.pipeline_parallel_microbatch_size 3
bad 2 "Number of microbatches (1) must be greater than or equal to the number of stages (2)." $(pp 2 1F1B) \
  --parallelism.pipeline_parallel_microbatch_size 4
mkdir -p "$WORK/tied" && cp tests/assets/tokenizer/tokenizer.model "$WORK/tied/"
cat >"$WORK/tied/config.json" <<JSON
{"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 768,
 "vocab_size": 2048, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 2048, "tie_word_embeddings": true}
JSON
bad 2 "Weight tying is not supported with Pipeline Parallel" $(pp 2 GPipe) --model.flavor from_hf --model.hf_assets_path "$WORK/tied"
bad 2 "parallelism.fsdp_reshard_after_forward 'always' with pipeline_parallel_degree > 1 is not supported yet" $(pp 2 GPipe) \
  --parallelism.fsdp_reshard_after_forward always
bad 2 "parallelism.module_fqns_per_model_part: pipeline stage 1: 'layers.2' comes before 'layers.1', which no stage holds" \
  $(pp 2 GPipe) --parallelism.module_fqns_per_model_part "tok_embeddings,layers.0;layers.2,layers.3,layers.4,layers.5,norm,output"
bad 2 "The specified path missing.csv does not exist or is not a file" $(pp 2 PipelineScheduleMulti) \
  --parallelism.pipeline_parallel_schedule_csv missing.csv
bad 2 "parallelism.pipeline_parallel_schedule 'ZeroBubble' is not a pipeline schedule" $(pp 2 ZeroBubble)
# A rank killed mid-pipeline, launched as two one-rank "nodes": the other rank's pending receive
# fails at once and names the dead rank (no launcher of its own sees the death).
port=$(free_port)
for node in 0 1; do
  NNODES=2 NODE_RANK=$node NGPU=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port ./run_train.sh "${SMALL[@]}" $(pp 2 1F1B) \
    --training.steps 100000 --comm.train_timeout_seconds 20 --job.dump_folder "$WORK/kill" >"$WORK/kill$node.log" 2>&1 &
  pids[$node]=$!
done
for _ in $(seq 1 900); do grep -q "step:  3 " "$WORK/kill0.log" && break; sleep 0.1; done
victim=$(rank_pid "$WORK/kill" 1)
[[ -n "$victim" ]] || fail "rank 1 not found"
kill -9 "$victim"
start=$SECONDS
set +e; wait "${pids[0]}"; rc=$?; wait "${pids[1]}"; set -e
(( SECONDS - start < 20 )) || fail "rank 0 took $((SECONDS - start)) s to end after rank 1 died"
[[ $rc -ne 0 ]] || fail "rank 0 exited 0 after rank 1 was killed"
grep -qE "(receive|send) over [a-z_]+ (from|to) rank 1 failed" "$WORK/kill0.log" || { cat "$WORK/kill0.log"; fail "rank 1 is not named"; }
echo "PASS"
