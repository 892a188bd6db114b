#!/usr/bin/env bash
# profiling.enable_profiling: libtorch's Kineto profiler writes TorchTitan's Chrome traces
# ({dump_folder}/{save_traces_folder}/iteration_{N}/rank{R}_trace.json) at the steps that
# torch.profiler.schedule(wait = profile_freq - warmup - active, warmup, active) saves, holding
# our forward, backward, optimizer and collective ranges of the profiled steps only.
source "$(dirname "$0")/lib.sh"
PROF=("${SMALL[@]}" --training.seq_len 64 --profiling.enable_profiling --profiling.profile_freq 3
      --profiling.profiler_warmup 1 --profiling.profiler_active 1)

train "$WORK/one.log" "${PROF[@]}" --training.steps 6 --job.dump_folder "$WORK/one"
[[ $RC -eq 0 ]] || { cat "$WORK/one.log"; fail "profiled run exited $RC"; }
grep -q "Profiling active. Traces will be saved at $WORK/one/profile_trace$" "$WORK/one.log" ||
  { cat "$WORK/one.log"; fail "no 'Profiling active' line (debug_model.toml's save_traces_folder is profile_trace)"; }
LOG_RANK=0,1 NGPU=2 train "$WORK/fsdp.log" "${PROF[@]}" --training.steps 3 --parallelism.data_parallel_shard_degree 2 \
  --job.dump_folder "$WORK/fsdp"
[[ $RC -eq 0 ]] || { cat "$WORK/fsdp.log"; fail "profiled FSDP run exited $RC"; }

# Each check: traces folder, training.steps, ranks, ranges every trace must hold.
"$TITAN_PYTHON" - "$WORK/one/profile_trace|6|1|" \
  "$WORK/fsdp/profile_trace|3|2|c10d::all_gather,c10d::reduce_scatter,c10d::all_reduce" <<'PY'
import json, os, sys
from torch.profiler import ProfilerAction, schedule

ours = ["forward", "backward", "Optimizer.step#AdamW.step"]
for check in sys.argv[1:]:
    folder, steps, ranks, collectives = check.split("|")
    # TorchTitan's torch.profiler.schedule; training step k runs at the profiler's step_num k - 1.
    action = schedule(wait=3 - (1 + 1), warmup=1, active=1)
    saved = [k for k in range(1, int(steps) + 1) if action(k - 1) == ProfilerAction.RECORD_AND_SAVE]
    assert sorted(os.listdir(folder)) == sorted(f"iteration_{k}" for k in saved), (os.listdir(folder), saved)
    for k in saved:
        files = sorted(os.listdir(f"{folder}/iteration_{k}"))
        assert files == [f"rank{r}_trace.json" for r in range(int(ranks))], files
        for name in files:
            events = [e for e in json.load(open(f"{folder}/iteration_{k}/{name}"))["traceEvents"] if e.get("ph") == "X"]
            names = {e["name"] for e in events}
            steps_seen = sorted(n for n in names if n.startswith("ProfilerStep#"))
            assert steps_seen == [f"ProfilerStep#{k}"], (name, steps_seen)  # active 1: the cycle's one step
            wanted = ours + [c for c in collectives.split(",") if c]
            assert set(wanted) <= names, (name, sorted(set(wanted) - names))
            assert "aten::mm" in names, name  # libtorch's own operators are recorded too
            step = next(e for e in events if e["name"] == f"ProfilerStep#{k}")
            for e in events:
                if e["name"] in wanted:  # inside the profiled step
                    assert step["ts"] <= e["ts"] and e["ts"] + e["dur"] <= step["ts"] + step["dur"], (name, e)
    print(f"{folder.split('/')[-2]}: traces at steps {saved} for {ranks} rank(s) hold {', '.join(wanted)}")
PY

# Bad schedules are one-line errors naming the key.
train "$WORK/bad.log" "${PROF[@]}" --training.steps 2 --profiling.profile_freq 1 --job.dump_folder "$WORK/bad"
[[ $RC -ne 0 && $(wc -l <"$WORK/bad.log") -eq 1 ]] &&
  grep -qx "error: profiling.profile_freq 1 must be >= profiling.profiler_warmup + profiling.profiler_active = 2" "$WORK/bad.log" ||
  { cat "$WORK/bad.log"; fail "profile_freq below warmup + active"; }
train "$WORK/active.log" "${PROF[@]}" --training.steps 2 --profiling.profiler_active 0 --job.dump_folder "$WORK/bad"
[[ $RC -ne 0 ]] && grep -qx "error: profiling.profiler_active must be positive, got 0" "$WORK/active.log" ||
  { cat "$WORK/active.log"; fail "profiler_active 0"; }
# A traces folder that cannot be made, at start-up or when a trace is saved (a file where a folder
# must go: root may write anywhere), is a one-line error naming it, never a missing trace.
mkdir -p "$WORK/blocked" && touch "$WORK/blocked/file"
train "$WORK/start.log" "${PROF[@]}" --training.steps 2 --profiling.save_traces_folder file/traces --job.dump_folder "$WORK/blocked"
[[ $RC -ne 0 ]] && grep -qx "error: cannot create the profiler traces folder $WORK/blocked/file/traces: Not a directory" "$WORK/start.log" &&
  ! grep -q "Training starts" "$WORK/start.log" || { cat "$WORK/start.log"; fail "traces folder under a file"; }
mkdir -p "$WORK/blocked/profile_trace" && touch "$WORK/blocked/profile_trace/iteration_3"
train "$WORK/save.log" "${PROF[@]}" --training.steps 3 --job.dump_folder "$WORK/blocked"
[[ $RC -ne 0 ]] &&
  grep -qx "error: cannot write the profiler trace $WORK/blocked/profile_trace/iteration_3/rank0_trace.json: Not a directory" "$WORK/save.log" ||
  { cat "$WORK/save.log"; fail "trace folder of a step is a file"; }
# CUDA memory snapshots need a GPU (scripts/gpu_check.sh runs them there).
train "$WORK/snap.log" "${PROF[@]}" --training.steps 2 --profiling.enable_memory_snapshot --job.dump_folder "$WORK/snap"
[[ $RC -ne 0 ]] && grep -qx "error: profiling.enable_memory_snapshot records the CUDA caching allocator; this run is on the CPU (no GPU visible)" \
  "$WORK/snap.log" || { cat "$WORK/snap.log"; fail "memory snapshot on the CPU"; }
echo "PASS"
