# Shared helpers for the integration tests: each test is a bash script that runs ./run_train.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"  # TITAN_PYTHON: the venv's python with torch 2.11 and numpy
WORK="$(mktemp -d "${TMPDIR:-/tmp}/titan_it.XXXXXX")"
# Leaves no rank running, whichever way the test ends (a failed check skips its own clean-up).
trap 'pkill -9 -f "titan_train.*$WORK" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A small debug run: CPU-sized batch and sequence, fixed seed, plain log lines.
SMALL=(--training.seq_len 128 --training.local_batch_size 4 --debug.seed 42 --metrics.disable_color_printing
       --metrics.log_freq 1 --activation_checkpoint.mode none)

fail() { echo "FAIL: $*" >&2; exit 1; }

# The losses of every logged step, one "step loss" pair per line.
losses() { sed -nE 's/.*step: *([0-9]+) +loss: +([0-9.]+).*/\1 \2/p' "$1"; }

# A free TCP port for a rendezvous the test sets up itself.
free_port() { python3 "$ROOT/scripts/free_port.py"; }

# rank_pid FOLDER R: the pid of rank R of the run whose command line names FOLDER.
# (No pipeline: under pipefail a pid that has exited, or head closing the pipe, would end the test.)
rank_pid() {
  local p
  for p in $(pgrep -f "titan_train.*$1"); do
    if grep -qz "^RANK=$2$" "/proc/$p/environ" 2>/dev/null; then echo "$p"; return 0; fi
  done
}

# Runs ./run_train.sh with the given arguments; stdout+stderr into $1, exit code into $RC.
train() {
  local log="$1"; shift
  set +e
  ./run_train.sh "$@" >"$log" 2>&1
  RC=$?
  set -e
}

# metrics FOLDER: "step loss grad_norm" of each step FOLDER/metrics.jsonl logged, at full precision
# (finer than the log line: runs are compared to 1e-5).
metrics() { "$TITAN_PYTHON" "$ROOT/scripts/metrics_columns.py" "$1/metrics.jsonl"; }
validation_losses() { "$TITAN_PYTHON" "$ROOT/scripts/metrics_columns.py" --validation "$1/metrics.jsonl"; }

# Layout comparisons (test_fsdp.sh, test_tp.sh): every run starts from one seed checkpoint
# ($WORK/seed, made by make_seed) on the arguments in LAYOUT_ARGS; its metrics go to
# $WORK/NAME.metrics. make_seed NAME ARGS...: another seed, in $WORK/NAME, of the model ARGS name.
make_seed() {
  local name="${1:-seed}"
  shift $(($# > 0))
  train "$WORK/$name.log" --checkpoint.enable --checkpoint.create_seed_checkpoint --debug.seed 42 --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "seed checkpoint exited $RC"; }
}

# near A B [FROM]: every step >= FROM present in both metric files agrees within 1e-5 relative.
near() {
  join <(sort -k1,1 "$1") <(sort -k1,1 "$2") | sort -n |
    awk -v from="${3:-1}" '$1 >= from {n++; for (i = 2; i <= 3; i++) {d = $i - $(i + 2); if (d < 0) d = -d;
          if (d > 1e-5 * ($i < 0 ? -$i : $i)) {print "step " $1 ": " $0; bad = 1}}} END {exit bad || n == 0}'
}

# layout_run NAME NGPU STEPS ARGS...: a run from the seed checkpoint ($SEED_DIR's, $WORK/seed by default).
layout_run() {
  local name="$1" ngpu="$2" steps="$3"; shift 3
  mkdir -p "$WORK/$name/checkpoint" && cp -r "${SEED_DIR:-$WORK/seed}/checkpoint/step-0" "$WORK/$name/checkpoint/"
  NGPU=$ngpu train "$WORK/$name.log" "${LAYOUT_ARGS[@]}" --training.steps "$steps" --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "$name exited $RC"; }
  metrics "$WORK/$name" >"$WORK/$name.metrics"
}

# layout_resume FROM NAME NGPU STEPS REFERENCE ARGS...: FROM's step-5 checkpoint resumed in another
# layout; steps 6.. must continue the REFERENCE run.
layout_resume() {
  local from="$1" name="$2" ngpu="$3" steps="$4" reference="$5"; shift 5
  mkdir -p "$WORK/$name/checkpoint" && cp -r "$WORK/$from/checkpoint/step-5" "$WORK/$name/checkpoint/"
  NGPU=$ngpu train "$WORK/$name.log" "${LAYOUT_ARGS[@]}" --training.steps "$steps" --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "$name exited $RC"; }
  metrics "$WORK/$name" >"$WORK/$name.metrics"
  grep -q "Training starts at step 6" "$WORK/$name.log" || fail "$name did not resume at step 6"
  near "$WORK/$reference.metrics" "$WORK/$name.metrics" 6 || fail "$name (from $from's checkpoint) diverged"
}
degrees() { echo --parallelism.data_parallel_replicate_degree "$1" --parallelism.data_parallel_shard_degree "$2"; }

# hf_export NAME NGPU ARGS...: a 2-step fp32 run on the layout comparisons' batch whose last save is
# a Hugging Face export, in $WORK/NAME/checkpoint/step-2. The tiny learning rate keeps the weights
# within 1e-6 of their initial values (the same bits in every layout), so comparing exports tests
# the gathering of the pieces, not AdamW's amplification of rounding in near-zero gradients.
hf_export() {
  local name="$1" ngpu="$2"; shift 2
  NGPU=$ngpu train "$WORK/$name.log" "${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.steps 2 \
    --training.mixed_precision_param float32 --optimizer.lr 1e-7 \
    --checkpoint.enable --checkpoint.last_save_model_only --checkpoint.last_save_in_hf --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] || { cat "$WORK/$name.log"; fail "HF export of $name exited $RC"; }
}

# same_hf_export A B: the HF exports of runs A and B hold the same tensors within 1e-5.
same_hf_export() {
  "$TITAN_PYTHON" - "$WORK/$1/checkpoint/step-2" "$WORK/$2/checkpoint/step-2" <<'PY'
import sys, glob
from safetensors.torch import load_file
def load(d):
    out = {}
    for f in sorted(glob.glob(d + "/*.safetensors")):
        out.update(load_file(f))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), (sorted(a.keys() ^ b.keys()))
worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
assert worst < 1e-5, worst
print(f"{len(a)} tensors, largest difference {worst:.2g}")
PY
}

# case_run NAME NGPU ARGS...: one of TorchTitan's integration cases (features.py at 238fa9953) runs
# to the end on the small debug run (plus CASE_ARGS), in $WORK/NAME (a case's runs share it).
CASE_ARGS=()
case_run() {
  local name="$1" ngpu="$2"; shift 2
  NGPU=$ngpu train "$WORK/$name.log" "${SMALL[@]}" "${CASE_ARGS[@]}" --job.dump_folder "$WORK/$name" "$@"
  [[ $RC -eq 0 ]] && grep -q "Training completed" "$WORK/$name.log" || { cat "$WORK/$name.log"; fail "TorchTitan case $name"; }
}
