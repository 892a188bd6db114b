#!/usr/bin/env bash
# PyTorch Distributed Checkpoint interop (tests/reference/dcp_reference.py, the venv's torch 2.11):
# a tiny Llama saved by torch.distributed.checkpoint.save from one process, from two FSDP2 gloo
# ranks and from two tensor-parallel ones loads through checkpoint.initial_load_path with the step-1 loss of the same weights in
# Python, and on two FSDP ranks as those weights in our format do; from-dcp + to-dcp gives a folder
# dcp.load reads back bit for bit on one and two processes; dcp_to_torch_save of it equals
# to-torch; a full checkpoint exported with to-dcp resumes as the native one does, and as TorchTitan
# resumes it (strict dcp.load, set_optimizer_state_dict, LambdaLR); bad folders are one-line errors
# naming key and file.
source "$(dirname "$0")/lib.sh"
./scripts/setup.sh && ./scripts/build.sh titan_train titan_sentencepiece titan_checkpoint_tool
TOOL="${TITAN_BUILD_DIR:-$ROOT/build}/titan_checkpoint"
REF=tests/reference/dcp_reference.py

# run_from FIXTURE DCP_DIR LOG DUMP [overrides]: one step of the fixture's model from a DCP folder.
run_from() {
  local fix="$1" dcp="$2" log="$3" dump="$4"; shift 4
  train "$log" --model.flavor from_hf --model.hf_assets_path "$fix" --checkpoint.enable \
    --checkpoint.initial_load_path "$dcp" --training.dataset_path "$fix/tokens.npy" --training.seq_len 32 \
    --training.local_batch_size 1 --training.steps 1 --metrics.disable_color_printing --job.dump_folder "$dump" "$@"
}

for mode in single fsdp2 tp; do
  fix="$WORK/$mode"
  expected=$("$TITAN_PYTHON" $REF save "$fix" $mode 2>/dev/null | "$TITAN_PYTHON" -c "import json,sys; print(json.load(sys.stdin)['loss'])")
  run_from "$fix" "$fix/step-1" "$WORK/$mode.log" "$WORK/run_$mode"
  [[ $RC -eq 0 ]] || { cat "$WORK/$mode.log"; fail "$mode: run exited $RC"; }
  got=$(losses "$WORK/$mode.log" | awk '$1 == 1 {print $2}')
  echo "$mode DCP save: step-1 loss $got, Python $expected"
  awk -v a="$got" -v b="$expected" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 + 5e-6)}' ||
    fail "$mode: loss $got differs from Python's $expected"
done

# Two FSDP ranks read their shards of the FSDP2 save and of the TP save (chunks split at other rows,
# or along the other dimension, than ours need) as they read the same weights converted to our
# format. (Our TP needs tp to divide the vocabulary; 101 rows keep FSDP2's split uneven.)
for mode in fsdp2 tp; do
  "$TOOL" from-dcp "$WORK/$mode/step-1" "$WORK/native_$mode/step-1" >/dev/null
  NGPU=2 run_from "$WORK/$mode" "$WORK/$mode/step-1" "$WORK/two_dcp.log" "$WORK/two_dcp_$mode"
  NGPU=2 run_from "$WORK/$mode" "$WORK/native_$mode/step-1" "$WORK/two_native.log" "$WORK/two_native_$mode"
  [[ -n "$(losses "$WORK/two_dcp.log")" && "$(losses "$WORK/two_dcp.log")" == "$(losses "$WORK/two_native.log")" ]] ||
    { cat "$WORK/two_dcp.log"; fail "two ranks, $mode save: $(losses "$WORK/two_dcp.log") from DCP, $(losses "$WORK/two_native.log") from native"; }
  echo "two FSDP ranks from the $mode save: $(losses "$WORK/two_dcp.log")"
done

# DCP -> native -> DCP: dcp.load reads the export bit for bit, on one process and on two FSDP2 ranks.
"$TOOL" to-dcp "$WORK/native_fsdp2/step-1" "$WORK/export" >/dev/null
"$TITAN_PYTHON" $REF compare "$WORK/export" "$WORK/fsdp2/step-1" 1 || fail "dcp.load of the export (one process)"
"$TITAN_PYTHON" $REF compare "$WORK/export" "$WORK/fsdp2/step-1" 2 2>&1 | grep -v Warning || fail "dcp.load of the export (two ranks)"
# dcp_to_torch_save of the export and our to-torch: the same tensors.
"$TITAN_PYTHON" $REF to-torch-save "$WORK/export" "$WORK/theirs.pt"
"$TOOL" to-torch "$WORK/native_fsdp2/step-1" "$WORK/ours.pt" >/dev/null
"$TITAN_PYTHON" - "$WORK/theirs.pt" "$WORK/ours.pt" <<'PY' || fail "dcp_to_torch_save differs from to-torch"
import sys
import torch
theirs, ours = torch.load(sys.argv[1]), torch.load(sys.argv[2])
assert set(theirs) == set(ours), set(theirs) ^ set(ours)
for k, v in ours.items():
    assert v.dtype == theirs[k].dtype and torch.equal(v, theirs[k]), k
print(f"dcp_to_torch_save == to-torch: {len(ours)} tensors")
PY

# A full checkpoint (optimizer, lr_scheduler, train_state) exported with to-dcp resumes as the native
# one does (the data loader state does not map: both resumes skip it).
fix="$WORK/single"
run_from "$fix" "$fix/step-1" "$WORK/full.log" "$WORK/full" --checkpoint.no-last_save_model_only --lr_scheduler.warmup_steps 3 \
  --lr_scheduler.total_steps 3  # the schedule the resumes below run, so the LR saved is the one they take next
[[ $RC -eq 0 ]] || { cat "$WORK/full.log"; fail "full save: run exited $RC"; }
"$TOOL" to-dcp "$WORK/full/checkpoint/step-1" "$WORK/full_dcp/step-1" >/dev/null
"$TITAN_PYTHON" - "$WORK/full_dcp/step-1" <<'PY' || fail "the full export lacks TorchTitan's keys"
import sys
import torch.distributed.checkpoint as dcp
keys = set(dcp.FileSystemReader(sys.argv[1]).read_metadata().state_dict_metadata)
for k in ["tok_embeddings.weight", "optimizer.state.layers.0.attention.wq.weight.exp_avg",
          "optimizer.state.norm.weight.exp_avg_sq", "optimizer.state.output.weight.step", "train_state.step",
          "lr_scheduler.last_epoch", "optimizer.param_groups.norm.weight.eps"]:
    assert k in keys, k
PY
for from in native dcp; do
  dir="$WORK/full/checkpoint/step-1"
  [[ $from == dcp ]] && dir="$WORK/full_dcp/step-1"
  train "$WORK/resume_$from.log" --model.flavor from_hf --model.hf_assets_path "$fix" --checkpoint.enable \
    --checkpoint.initial_load_path "$dir" --checkpoint.no-initial_load_model_only \
    --checkpoint.exclude_from_loading dataloader --training.dataset_path "$fix/tokens.npy" --training.seq_len 32 \
    --training.local_batch_size 1 --training.steps 3 --lr_scheduler.warmup_steps 3 --metrics.disable_color_printing \
    --job.dump_folder "$WORK/resume_$from"
  [[ $RC -eq 0 ]] || { cat "$WORK/resume_$from.log"; fail "resume from $from: run exited $RC"; }
done
grep -q "Loaded checkpoint .*full_dcp/step-1 (step 1): model, optimizer, lr_scheduler, train_state; skipped dataloader" \
  "$WORK/resume_dcp.log" || { cat "$WORK/resume_dcp.log"; fail "the DCP resume did not load the full state"; }
[[ "$(losses "$WORK/resume_dcp.log")" == "$(losses "$WORK/resume_native.log")" ]] ||
  fail "resume from the DCP export: $(losses "$WORK/resume_dcp.log") differs from native $(losses "$WORK/resume_native.log")"
echo "full checkpoint via DCP resumes as native: $(losses "$WORK/resume_dcp.log" | tr '\n' ' ')"
# TorchTitan's own resume of the export (strict dcp.load of its state dict, set_optimizer_state_dict,
# LambdaLR) takes steps 2 and 3 as ours: the LR it loads is the warmup's 8e-4 * 2/3, by hand.
"$TITAN_PYTHON" $REF resume "$WORK/full_dcp/step-1" "$fix" >"$WORK/torchtitan_resume.json" ||
  fail "TorchTitan's strict resume of the full export"
"$TITAN_PYTHON" - "$WORK/torchtitan_resume.json" "$(losses "$WORK/resume_dcp.log" | awk '$1 > 1 {print $2}' | tr '\n' ' ')" <<'PY' ||
import json, sys
r = json.load(open(sys.argv[1]))
ours = [float(v) for v in sys.argv[2].split()]
assert r["step"] == 1 and abs(r["lr"] - 8e-4 * 2 / 3) < 1e-12 and r["initial_lr"] == 8e-4, r
assert len(ours) == 2 and all(abs(a - b) <= 1e-5 * b for a, b in zip(r["losses"], ours)), (r["losses"], ours)
print(f"TorchTitan's resume of the export: lr {r['lr']:.6g}, steps 2-3 losses {r['losses']} (ours {ours})")
PY
  fail "TorchTitan's resume of the export differs from ours"
# The LR survives from-dcp then to-dcp (no warning), and TorchTitan resumes the re-export alike.
"$TOOL" from-dcp "$WORK/full_dcp/step-1" "$WORK/full_back/step-1" >/dev/null
"$TOOL" to-dcp "$WORK/full_back/step-1" "$WORK/full_again/step-1" >/dev/null 2>"$WORK/again.err"
[[ ! -s "$WORK/again.err" ]] || { cat "$WORK/again.err"; fail "to-dcp of a from-dcp import warned"; }
"$TITAN_PYTHON" $REF resume "$WORK/full_again/step-1" "$fix" >"$WORK/torchtitan_again.json" 2>/dev/null ||
  fail "TorchTitan's strict resume of the re-export"
cmp -s "$WORK/torchtitan_resume.json" "$WORK/torchtitan_again.json" ||
  fail "re-export resumes differently: $(cat "$WORK/torchtitan_again.json")"

# Bad folders: one error line naming what is wrong.
expect_load_error() {  # expect_load_error "<text>" FIXTURE DCP_DIR
  run_from "$2" "$3" "$WORK/err.log" "$WORK/err_$RANDOM"
  [[ $RC -ne 0 ]] || fail "exit 0 for $3"
  grep -qF -- "$1" "$WORK/err.log" || { cat "$WORK/err.log"; fail "no '$1' for $3"; }
  [[ $(grep -c "^error: " "$WORK/err.log") -eq 1 ]] || { cat "$WORK/err.log"; fail "expected one error line for $3"; }
  grep "^error: " "$WORK/err.log"
}
cp -r "$WORK/fsdp2/step-1" "$WORK/bad_class"
"$TITAN_PYTHON" - "$WORK/bad_class/.metadata" <<'PY'
import collections, pickle, sys
import torch.distributed.checkpoint as dcp
meta = dcp.FileSystemReader(sys.argv[1].rsplit("/", 1)[0]).read_metadata()
meta.planner_data = collections.Counter(a=1)  # a class no checkpoint holds
open(sys.argv[1], "wb").write(pickle.dumps(meta))
PY
expect_load_error "bad_class/.metadata: pickle byte" "$WORK/fsdp2" "$WORK/bad_class"
grep -qF "refers to collections.Counter, which is not a class a checkpoint holds" "$WORK/err.log" || fail "class not named"
cp -r "$WORK/fsdp2/step-1" "$WORK/no_file" && rm "$WORK/no_file/__1_0.distcp"
expect_load_error "key 'tok_embeddings.weight': its data file $WORK/no_file/__1_0.distcp is missing" "$WORK/fsdp2" "$WORK/no_file"
cp -r "$WORK/fsdp2/step-1" "$WORK/short" && truncate -s 100000 "$WORK/short/__0_0.distcp"
expect_load_error "in $WORK/short/__0_0.distcp: $WORK/short/__0_0.distcp is truncated" "$WORK/fsdp2" "$WORK/short"
mkdir -p "$WORK/other" && cp "$WORK/fsdp2/tokens.npy" "$WORK/other/"
sed 's/"vocab_size": 101/"vocab_size": 100/' "$WORK/fsdp2/config.json" >"$WORK/other/config.json"
expect_load_error "checkpoint $WORK/fsdp2/step-1: 'tok_embeddings.weight' has shape [101, 64], the model expects [100, 64]" \
  "$WORK/other" "$WORK/fsdp2/step-1"
echo "PASS"
