#!/usr/bin/env bash
# The GPU check, for the H100/H200 machine we are sometimes lent (torch 2.11.0+cu130 in /opt/torch/.venv,
# the same build as our venv's; no network). Two steps:
#   scripts/gpu_check.sh prepare   here: builds titan_train and the unit tests and bundles them with
#                                  the Debian libraries that machine lacks into .deps/gpu-bundle, and
#                                  prints the device call (what to carry). Building here saves the
#                                  device minutes a build there would cost.
#   scripts/gpu_check.sh           there: runs the bundled binaries against that venv's libtorch:
#     1. the unit tests that need a GPU (*Cuda*, RmsNorm, Swiglu, CrossEntropySum: our CUDA kernels
#        against the CPU's, the CUDA grad norm, RMSNorm, the SwiGLU gate and the cross-entropy alone
#        and fused with the projection on CUDA against float64);
#     2. trains the debug model 20 steps on CUDA: step-1 loss equal to a CPU run's within 1e-4, and falling;
#     3. resumes from its step-10 checkpoint on CUDA: steps 11-20 equal the uninterrupted run's;
#     4. profiles 4 debug-model steps: CUDA memory snapshots that torch's memory_viz renders, and a
#        Chrome trace holding GPU kernels;
#     5. trains a Llama-3.2-1B-shaped model (bf16, batch 4 x seq 2048, random tokens) 10 steps: tokens/s,
#        MFU and peak memory of steps 3-10;
#     6. the same model and batch in eager PyTorch 2.11 (bench/eager_reference.py), then
#     7. under torch.compile: tokens/s, MFU and peak memory of each beside ours;
#     8. one profiled step of that model, ours and eager PyTorch's: GPU kernel time by kind and the
#        heaviest kernels (bench/gpu_kernels.py).
# A failed step is reported and the next one still runs; GPU_CHECK_STEPS="5 6" runs only those (a rerun
# after a fix; 3 needs 2). Everything goes to $OUT/gpu_check.log (outputs/gpu_check without $OUT); exit 0 when
# every step run holds. Each run's log and the step-8 traces come back in $OUT/logs.tar.gz.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUNDLE="$ROOT/.deps/gpu-bundle"
CARRY='[".deps/gpu-bundle", "tests/assets/janeausten", "tests/assets/tokenizer"]'

if [[ "${1:-}" == "prepare" ]]; then
  ./scripts/setup.sh  # corpus, tokenizer, the venv and gloo headers the build needs
  ./scripts/build.sh titan_train titan_sentencepiece titan_unit_tests
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE"
  # the trainer loads the shim from its own folder
  cp build/titan_train build/libtitan_sentencepiece.so build/tests/titan_unit_tests "$BUNDLE/"
  for lib in libtomlplusplus.so.3 libtcmalloc_minimal.so.4 libpcre2-8.so.0 libsentencepiece.so.0; do
    path=$(ldd build/titan_train build/libtitan_sentencepiece.so | awk -v l="$lib" '$1 == l {print $3}' | head -1)
    [[ -n "$path" ]] || { echo "gpu_check: titan_train does not link $lib" >&2; exit 1; }
    cp -L "$path" "$BUNDLE/"
  done
  echo "gpu_check: ready ($(du -sh "$BUNDLE" | cut -f1) in .deps/gpu-bundle); on the GPU machine run, from the repository root, with carry $CARRY:"
  echo '  bash scripts/gpu_check.sh'
  exit 0
fi

OUT="${OUT:-$ROOT/outputs/gpu_check}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
tee_pid=$!
WORK="$(mktemp -d)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
# On any exit: keep the logs, drop the scratch folder, and let tee write the last lines before the log is read.
trap 'tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs; rm -rf "$WORK"; exec >&- 2>&-; wait $tee_pid' EXIT
start=$(date +%s)
say() { echo "gpu_check [$(($(date +%s) - start)) s]: $*"; }
fail() { say "FAIL: $*"; exit 1; }

[[ -d /opt/torch/.venv ]] && export TITAN_VENV="${TITAN_VENV:-/opt/torch/.venv}"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
[[ -x "$TITAN_PYTHON" ]] || fail "no python at $TITAN_PYTHON (set TITAN_VENV to the venv holding torch)"
say "$("$TITAN_PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc

# The bundled binary finds libtorch (and the CUDA/NCCL libraries beside it) in this venv.
[[ -x "$BUNDLE/titan_train" ]] || fail "no $BUNDLE/titan_train: run 'scripts/gpu_check.sh prepare' here and carry $CARRY"
SITE=$("$TITAN_PYTHON" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
LIBS="$BUNDLE:$SITE/torch/lib$(printf ':%s' "$SITE"/nvidia/*/lib)"
missing=$(LD_LIBRARY_PATH="$LIBS" ldd "$BUNDLE/titan_train" | grep "not found" || true)
[[ -z "$missing" ]] || fail "titan_train misses libraries: $missing"
LD_LIBRARY_PATH="$LIBS" ldd "$BUNDLE/titan_train" | grep -E "libtorch_cuda|libnccl" || fail "titan_train does not link libtorch_cuda and NCCL"
titan() { LD_LIBRARY_PATH="$LIBS" "$BUNDLE/titan_train" "$@"; }

cuda_unit_tests() {
  LD_LIBRARY_PATH="$LIBS" "$BUNDLE/titan_unit_tests" --gtest_filter='*Cuda*:RmsNorm.*:Swiglu.*:CrossEntropySum.*' >"$LOGS/unit_tests.log" 2>&1 ||
    { tail -30 "$LOGS/unit_tests.log"; fail "unit tests"; }
  grep -E "^\[ +(OK|SKIPPED|FAILED) +\]|PASSED" "$LOGS/unit_tests.log"
  ! grep -q "SKIPPED \]" "$LOGS/unit_tests.log" || fail "a GPU test skipped with a GPU present"
  grep -qE "PASSED  \] [1-9]" "$LOGS/unit_tests.log" || fail "no GPU test ran"
}
export OMP_WAIT_POLICY=passive CUBLAS_WORKSPACE_CONFIG=:4096:8  # the second: cuBLAS under debug.deterministic

# Every step's loss, at full precision, from the dump folder's metrics.jsonl (appended across resumes).
run() {  # run NAME FOLDER ARGS...: trains into FOLDER, keeps the log and NAME.metrics ("step loss grad_norm"), prints nothing
  local name=$1 folder=$2; shift 2
  titan --job.config_file configs/debug_model.toml --metrics.disable_color_printing --metrics.log_freq 1 \
    --debug.seed 42 --job.dump_folder "$folder" "$@" >"$LOGS/$name.log" 2>&1 || { tail -20 "$LOGS/$name.log"; fail "$name run"; }
  "$TITAN_PYTHON" scripts/metrics_columns.py "$folder/metrics.jsonl" >"$WORK/$name.metrics"
}
loss_at() { awk -v s="$2" '$1 == s {print $2}' "$WORK/$1.metrics" | tail -1; }

debug_on_cuda() {
  CUDA_VISIBLE_DEVICES= run cpu "$WORK/cpu" --training.steps 1
  grep -q "device cpu" "$LOGS/cpu.log" || fail "CUDA_VISIBLE_DEVICES= did not train on the CPU"
  run cuda "$WORK/cuda" --training.steps 20 --checkpoint.enable --checkpoint.interval 10 --debug.deterministic
  grep -q "device cuda:0" "$LOGS/cuda.log" || fail "the CUDA run did not train on cuda:0"
  grep -E "step: +(1|10|20) " "$LOGS/cuda.log"
  local cpu1 cuda1 cuda20
  cpu1=$(loss_at cpu 1) cuda1=$(loss_at cuda 1) cuda20=$(loss_at cuda 20)
  awk -v a="$cpu1" -v b="$cuda1" 'BEGIN {d = a - b; exit !(d < 1e-4 && d > -1e-4)}' || fail "step-1 loss CPU $cpu1 vs CUDA $cuda1"
  awk -v a="$cuda1" -v b="$cuda20" 'BEGIN {exit !(b < a)}' || fail "loss did not fall: $cuda1 -> $cuda20"
  say "   step-1 loss CPU $cpu1, CUDA $cuda1; step 20 $cuda20"
}

resume_on_cuda() {
  run resumed "$WORK/cuda" --training.steps 20 --checkpoint.enable --checkpoint.interval 10 \
    --checkpoint.load_step 10 --debug.deterministic
  local s a b
  for s in $(seq 11 20); do
    a=$(loss_at cuda "$s") b=$(loss_at resumed "$s")
    awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; exit !(d < 1e-5 * a && d > -1e-5 * a)}' || fail "step $s after resume: $b, uninterrupted $a"
  done
  say "   steps 11-20 after resume equal the uninterrupted run's (1e-5); step 20: $(loss_at resumed 20)"
}

snapshots_and_traces() {
  run snapshot "$WORK/snap" --training.steps 4 --profiling.enable_memory_snapshot --profiling.enable_profiling \
    --profiling.profile_freq 2 --profiling.profiler_warmup 0 --profiling.profiler_active 1
  "$TITAN_PYTHON" - "$WORK/snap" <<'PY' || fail "memory snapshot or trace"
import json, os, pickle, sys
from torch.cuda import _memory_viz
folder = sys.argv[1]
assert sorted(os.listdir(f"{folder}/memory_snapshot")) == ["iteration_2", "iteration_4"], os.listdir(f"{folder}/memory_snapshot")
for step in (2, 4):
    snapshot = pickle.load(open(f"{folder}/memory_snapshot/iteration_{step}/rank0_memory_snapshot.pickle", "rb"))
    assert snapshot["segments"] and snapshot["device_traces"][0], "no segments or no recorded history"
    html = _memory_viz.trace_plot(snapshot)
    print(f"   iteration_{step}: {len(snapshot['segments'])} segments, {len(snapshot['device_traces'][0])} "
          f"allocator events, memory_viz page {len(html)} bytes")
events = json.load(open(f"{folder}/profile_trace/iteration_4/rank0_trace.json"))["traceEvents"]
kernels = [e for e in events if e.get("cat") == "kernel"]
assert kernels, "no GPU kernels in the trace"
print(f"   trace iteration_4: {len(kernels)} GPU kernels")
PY
}

# The Llama-3.2-1B shape for steps 5-8; steps 1-2 are warm-up (the first one allocates, the second settles).
LLAMA1B="$WORK/llama1b"
mkdir -p "$LLAMA1B"
cat >"$LLAMA1B/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
 "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "rope_theta": 500000.0,
 "rms_norm_eps": 1e-05, "tie_word_embeddings": true, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
 "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}}
JSON
"$TITAN_PYTHON" -c "import numpy as np; np.save('$WORK/tokens.npy', np.random.default_rng(0).integers(0, 128256, 4_000_000).astype(np.int32))"
# The shape, batch and tokens, for titan_train and for PyTorch (bench/eager_reference.py).
LLAMA1B_TITAN=(--model.flavor from_hf --model.hf_assets_path "$LLAMA1B" --training.dataset_path "$WORK/tokens.npy"
  --training.dtype bfloat16 --training.seq_len 2048 --training.local_batch_size 4 --activation_checkpoint.mode none
  --lr_scheduler.warmup_steps 2)
pytorch() {  # pytorch LOG ARGS...: the same model, batch and tokens in PyTorch on CUDA
  local log=$1; shift
  timeout 200 "$TITAN_PYTHON" bench/eager_reference.py "$LLAMA1B/config.json" "$WORK/tokens.npy" --batch 4 --seq 2048 \
    --warmup 2 --threads "$(nproc)" --dtype bfloat16 --device cuda "$@" >"$LOGS/$log.log" 2>&1 ||
    { tail -20 "$LOGS/$log.log"; fail "$log"; }
}

llama1b_ours() {
  run llama1b "$WORK/llama1b_out" "${LLAMA1B_TITAN[@]}" --training.steps 10
  grep -E "Peak FLOPS|size:|step: " "$LOGS/llama1b.log"
  local tps mfu
  read -r tps mfu < <(sed -nE 's/.*step: +([0-9]+) .*tps: ([0-9,]+).*mfu: ([0-9.]+)%.*/\1 \2 \3/p' "$LOGS/llama1b.log" |
    awk '$1 > 2 {gsub(",", "", $2); t += $2; m += $3; n++} END {if (n) printf "%.0f %.2f\n", t / n, m / n}') || true
  [[ -n "$tps" ]] || fail "no tps/mfu in the step lines"
  echo "$tps $mfu" >"$WORK/ours"  # for steps 6 and 7 (each step runs in its own subshell)
  say "   titan.cpp steps 3-10: $tps tokens/s, MFU $mfu%, $(grep -oE "memory: +[0-9.]+GiB" "$LOGS/llama1b.log" | tail -1)"
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true
}

llama1b_pytorch() {  # llama1b_pytorch NAME [--compile]: PyTorch on the same shape, batch and data, beside ours
  local name=$1; shift
  pytorch "$name" --steps 10 "$@"
  "$TITAN_PYTHON" - "$LOGS/$name.log" "$name" "$WORK/ours" <<'PY'
import json, os, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ours_tps, ours_mfu = map(float, open(sys.argv[3]).read().split()) if os.path.exists(sys.argv[3]) else (None, None)
line = (f"   {sys.argv[2]} steps 3-10: {r['tps']:.0f} tokens/s, peak {r['peak_cuda_gib']:.2f} GiB reserved "
        f"({r['peak_cuda_allocated_gib']:.2f} allocated), warm-up {r['warmup_s']:.1f} s")
if ours_tps:  # the same model and tokens, so MFU scales with tokens/s
    line += f", MFU {ours_mfu * r['tps'] / ours_tps:.2f}%; titan.cpp/{sys.argv[2]} = {ours_tps / r['tps']:.3f}x"
print(line)
PY
}

llama1b_kernels() {
  run llama1b_profiled "$WORK/llama1b_profiled" "${LLAMA1B_TITAN[@]}" --training.steps 4 --profiling.enable_profiling \
    --profiling.profile_freq 4 --profiling.profiler_warmup 1 --profiling.profiler_active 1 --profiling.save_traces_folder trace
  cp "$WORK/llama1b_profiled/trace/iteration_4/rank0_trace.json" "$LOGS/titan_trace.json"
  pytorch eager_profiled --steps 4 --trace "$LOGS/eager_trace.json"
  "$TITAN_PYTHON" bench/gpu_kernels.py titan.cpp="$LOGS/titan_trace.json" eager="$LOGS/eager_trace.json" --top 15
}

passed=() failed=()
step() {  # step TITLE FUNCTION ARGS...: runs it in a subshell that stops at its first error; the next step runs regardless
  local title=$1; shift
  [[ " ${GPU_CHECK_STEPS:-1 2 3 4 5 6 7 8} " == *" ${title%%.*} "* ]] || return 0
  say "$title"
  set +e
  (set -e; "$@")
  local rc=$?
  set -e
  if ((rc == 0)); then passed+=("$title"); else failed+=("$title"); fi
}
step "1. the unit tests that need a GPU" cuda_unit_tests
step "2. debug model: 1 step on the CPU, 20 steps on CUDA" debug_on_cuda
step "3. resume from step 10 on CUDA" resume_on_cuda
step "4. memory snapshots and profiler traces on CUDA (profile_freq 2)" snapshots_and_traces
step "5. Llama-3.2-1B shape, bf16, batch 4 x seq 2048, 10 steps: titan.cpp" llama1b_ours
step "6. the same in eager PyTorch" llama1b_pytorch eager
step "7. the same under torch.compile" llama1b_pytorch compile --compile
step "8. one profiled step of that model: titan.cpp and eager PyTorch" llama1b_kernels
say "passed: ${#passed[@]}, failed: ${#failed[@]}"
for title in "${failed[@]}"; do say "   FAILED: $title"; done
((${#failed[@]} == 0))
