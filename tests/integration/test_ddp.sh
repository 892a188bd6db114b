#!/usr/bin/env bash
# DDP over two local ranks (Gloo): the same losses and gradient norms as one process on the same
# global batch; a checkpoint saved under DDP resumes in one process (another data-parallel
# degree) without excluding the dataloader; a rank that dies stops the job with a clear line.
source "$(dirname "$0")/lib.sh"
DDP=(--parallelism.data_parallel_replicate_degree 2 --parallelism.data_parallel_shard_degree 1)
metrics() { sed -nE 's/.*(step: *[0-9]+) +loss: +([0-9.]+) +grad_norm: +([0-9.]+).*/\1 \2 \3/p' "$1"; }
close() {  # close A B: the step/loss/grad_norm triples agree to float tolerance
  paste <(metrics "$1") <(metrics "$2") |
    awk '{dl = $3 - $7; dg = $4 - $8; if (dl < 0) dl = -dl; if (dg < 0) dg = -dg;
          if ($2 != $6 || dl > 2e-4 || dg > 2e-3) {print; bad = 1}} END {exit bad || NR == 0}'
}

export LOG_RANK=0,1
NGPU=2 train "$WORK/ddp.log" "${SMALL[@]}" "${DDP[@]}" --training.local_batch_size 2 --training.steps 6 \
  --checkpoint.enable --checkpoint.interval 3 --checkpoint.no-last_save_model_only --job.dump_folder "$WORK/ddp"
[[ $RC -eq 0 ]] || { cat "$WORK/ddp.log"; fail "DDP run exited $RC"; }
grep -q "^\[rank1\]: .*step:  6" "$WORK/ddp.log" || fail "rank 1's output is not shown with LOG_RANK=0,1"
grep "^\[rank0\]" "$WORK/ddp.log" >"$WORK/rank0.log"
train "$WORK/one.log" "${SMALL[@]}" --training.local_batch_size 4 --training.steps 6 --job.dump_folder "$WORK/one"
close "$WORK/rank0.log" "$WORK/one.log" || fail "DDP2 and one process differ"

# Resume the DDP checkpoint of step 3 in one process: steps 4..6 continue the same stream.
mkdir -p "$WORK/resume/checkpoint" && cp -r "$WORK/ddp/checkpoint/step-3" "$WORK/resume/checkpoint/"
unset LOG_RANK
train "$WORK/resume.log" "${SMALL[@]}" --training.local_batch_size 4 --training.steps 6 --checkpoint.enable \
  --job.dump_folder "$WORK/resume"
[[ $RC -eq 0 ]] || { cat "$WORK/resume.log"; fail "resume in one process exited $RC"; }
grep -q "Training starts at step 4" "$WORK/resume.log" || fail "did not resume at step 4"
grep -E "step: +[4-6] " "$WORK/rank0.log" >"$WORK/rank0_tail.log"
close "$WORK/rank0_tail.log" "$WORK/resume.log" ||
  { paste <(metrics "$WORK/rank0.log") <(metrics "$WORK/resume.log"); fail "resume under another DP degree diverged"; }

# Default LOG_RANK shows rank 0 only; a killed rank ends the job, naming it.
NGPU=2 ./run_train.sh "${SMALL[@]}" "${DDP[@]}" --training.steps 1000 --job.dump_folder "$WORK/kill" >"$WORK/kill.log" 2>&1 &
launcher=$!
for _ in $(seq 1 600); do grep -q "step:  2" "$WORK/kill.log" && break; sleep 0.1; done
victim=$(rank_pid "$WORK/kill" 1)
[[ -n "$victim" ]] || fail "rank 1 not found"
kill -9 "$victim"
set +e
wait $launcher
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "launcher exited 0 after a rank was killed"
grep -q "^error: rank 1 (pid $victim) exited with code 137; stopping the other ranks" "$WORK/kill.log" ||
  { cat "$WORK/kill.log"; fail "no line naming the failed rank"; }
! grep -q "^\[rank1\]: .*step:" "$WORK/kill.log" || fail "rank 1 output shown without LOG_RANK"
sleep 1
! pgrep -f "titan_train.*$WORK/kill" >/dev/null || fail "ranks left running"

# Expert parallelism on a dense model: a clear error naming the key and the model.
NGPU=2 train "$WORK/ep.log" "${SMALL[@]}" --training.steps 1 --parallelism.expert_parallel_degree 2 --job.dump_folder "$WORK/ep"
[[ $RC -ne 0 ]] && grep -q "parallelism.expert_parallel_degree 2 needs an MoE model (model.name llama4); llama3 debugmodel has no experts" "$WORK/ep.log" ||
  { cat "$WORK/ep.log"; fail "expert parallel message"; }
echo "PASS"
