#!/usr/bin/env bash
# Data-parallel layouts over Gloo ranks, all from one seed checkpoint on the same global batch of
# 8 sequences: 1 rank, DDP2, FSDP2, FSDP4, HSDP2x2, FSDP2 and DDP2 with gradient accumulation give the
# same loss and grad_norm at each of the first 5 steps within 1e-5 relative; each layout's step-5
# checkpoint resumes in another layout on the uninterrupted FSDP4 run's numbers.
source "$(dirname "$0")/lib.sh"
# decay_ratio 0: the LR no longer depends on training.steps, so 5- and 10-step runs share a schedule.
LAYOUT_ARGS=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
             --lr_scheduler.decay_ratio 0 --checkpoint.enable --checkpoint.interval 5 --checkpoint.no-last_save_model_only)
make_seed


layout_run fsdp4 4 10 $(degrees 1 4) --training.local_batch_size 2 --checkpoint.async_mode async
grep -q "Training state on this rank: .* (0.25[0-9] of the unsharded" "$WORK/fsdp4.log" ||
  { grep "Training state" "$WORK/fsdp4.log"; fail "FSDP4 does not hold a quarter of the training state"; }
layout_run one 1 5 --training.local_batch_size 8
layout_run ddp2 2 5 $(degrees 2 1) --training.local_batch_size 4
layout_run fsdp2 2 5 $(degrees 1 2) --training.local_batch_size 4
layout_run hsdp 4 5 $(degrees 2 2) --training.local_batch_size 2
layout_run accum 2 5 $(degrees 1 2) --training.local_batch_size 2 --parallelism.fsdp_reshard_after_forward never \
  --activation_checkpoint.mode full
grep -q "gradient accumulation steps 2" "$WORK/accum.log" || fail "the accumulation run does not accumulate"
# DDP with accumulation: the first microbatch's backward does not all-reduce (no_sync), the
# checkpointed blocks' nested backward fires the bucket hooks.
layout_run ddp_accum 2 5 $(degrees 2 1) --training.local_batch_size 2 --activation_checkpoint.mode full
# Two "nodes" of two ranks on this machine (one shared dump folder, as on a shared filesystem).
mkdir -p "$WORK/nodes/checkpoint" && cp -r "$WORK/seed/checkpoint/step-0" "$WORK/nodes/checkpoint/"
port=$(free_port)
for node in 0 1; do
  NNODES=2 NODE_RANK=$node NGPU=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    ./run_train.sh "${LAYOUT_ARGS[@]}" $(degrees 1 4) --training.local_batch_size 2 --training.steps 5 \
    --job.dump_folder "$WORK/nodes" >"$WORK/node$node.log" 2>&1 &
  pids[$node]=$!
done
wait "${pids[0]}" || { cat "$WORK/node0.log"; fail "node 0 failed"; }
wait "${pids[1]}" || { cat "$WORK/node1.log"; fail "node 1 failed"; }
metrics "$WORK/nodes" >"$WORK/nodes.metrics"
for name in one ddp2 fsdp2 hsdp accum ddp_accum nodes; do
  near "$WORK/fsdp4.metrics" "$WORK/$name.metrics" || fail "$name differs from FSDP4 in the first 5 steps"
done

# Resume each layout's step-5 checkpoint under another layout: steps 6.. continue the FSDP4 run.
resume() { local from="$1" name="$2" ngpu="$3" steps="$4"; shift 4; layout_resume "$from" "$name" "$ngpu" "$steps" fsdp4 "$@"; }
resume fsdp4 fsdp4_to_fsdp2 2 10 $(degrees 1 2) --training.local_batch_size 4
resume fsdp4 fsdp4_to_one 1 10 --training.local_batch_size 8
resume one one_to_hsdp 4 6 $(degrees 2 2) --training.local_batch_size 2
resume hsdp hsdp_to_ddp2 2 6 $(degrees 2 1) --training.local_batch_size 4
resume ddp2 ddp2_to_fsdp4 4 6 $(degrees 1 4) --training.local_batch_size 2
resume fsdp2 fsdp2_to_one 1 6 --training.local_batch_size 8
# Replicas save their shards once: HSDP's step-5 holds files of replica 0's ranks only.
[[ "$(cd "$WORK/hsdp/checkpoint/step-5" && ls __*_0.safetensors | tr '\n' ' ')" == "__0_0.safetensors __1_0.safetensors " ]] ||
  { ls "$WORK/hsdp/checkpoint/step-5"; fail "HSDP checkpoint files"; }
# Hugging Face export and import under FSDP: the last save of an FSDP2 run and of one rank as HF
# folders (FSDP gathers on rank 0); the FSDP2 export loaded sharded (FSDP2) and whole (one rank),
# and the one-rank export, all give the same step-1 loss.
HF=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32)
for ngpu in 1 2; do
  NGPU=$ngpu train "$WORK/hf_save$ngpu.log" "${HF[@]}" --training.local_batch_size $((8 / ngpu)) --training.steps 2 \
    --checkpoint.enable --checkpoint.last_save_model_only --checkpoint.last_save_in_hf --job.dump_folder "$WORK/hf_save$ngpu"
  [[ $RC -eq 0 && -f "$WORK/hf_save$ngpu/checkpoint/step-2/model.safetensors.index.json" ]] ||
    { cat "$WORK/hf_save$ngpu.log"; fail "HF export with NGPU=$ngpu"; }
done
hf_load() {  # hf_load NAME NGPU EXPORT
  NGPU=$2 train "$WORK/$1.log" "${HF[@]}" --training.local_batch_size $((8 / $2)) \
    --training.steps 1 --checkpoint.enable --checkpoint.initial_load_path "$3" --checkpoint.initial_load_in_hf \
    --job.dump_folder "$WORK/$1"
  [[ $RC -eq 0 ]] || { cat "$WORK/$1.log"; fail "HF load $1"; }
  metrics "$WORK/$1" >"$WORK/$1.metrics"
}
hf_load fsdp_export_whole 1 "$WORK/hf_save2/checkpoint/step-2"
hf_load fsdp_export_sharded 2 "$WORK/hf_save2/checkpoint/step-2"
hf_load one_export 1 "$WORK/hf_save1/checkpoint/step-2"
near "$WORK/one_export.metrics" "$WORK/fsdp_export_whole.metrics" || fail "FSDP2's HF export differs from one rank's"
near "$WORK/one_export.metrics" "$WORK/fsdp_export_sharded.metrics" || fail "an HF export loads differently under FSDP2"
echo "PASS"
