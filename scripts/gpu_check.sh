#!/usr/bin/env bash
# The GPU check, for the H200 machine we are sometimes lent (torch 2.11.0+cu130 in /opt/torch/.venv,
# cmake, ninja, nvcc 13.0, no network). Two steps:
#   scripts/gpu_check.sh prepare   here, with network: downloads the Debian packages the build needs
#                                  as .deb files into .deps/debs (the gloo ones too) and prints the
#                                  device call (what to carry).
#   scripts/gpu_check.sh           there: unpacks the .debs into .deps/gpu-root (never into /),
#                                  builds against that torch, then
#     1. trains the debug model 20 steps on CUDA: step-1 loss equal to a CPU run's within 1e-4, and falling;
#     2. resumes from its step-10 checkpoint on CUDA: steps 11-20 equal the uninterrupted run's;
#     3. trains a Llama-3.2-1B-shaped model (bf16, seq 2048, random pre-tokenized tokens) 10 steps and
#        prints tokens/s and MFU;
#     4. profiles 4 debug-model steps: CUDA memory snapshots that torch's memory_viz renders, and a
#        Chrome trace holding GPU kernels.
# Everything goes to $OUT/gpu_check.log (outputs/gpu_check without $OUT); exit 0 when every check holds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEBS=(libtomlplusplus-dev libtomlplusplus3 nlohmann-json3-dev zlib1g-dev libsentencepiece-dev libsentencepiece0
      libtcmalloc-minimal4 libpcre2-dev libpcre2-8-0)

if [[ "${1:-}" == "prepare" ]]; then
  ./scripts/setup.sh  # corpus, tokenizer, gloo headers (their .debs are kept in .deps/gloo/debs)
  mkdir -p .deps/debs
  (cd .deps/debs && apt-get download "${DEBS[@]}" 2>&1 | { grep -v "^W: Download is performed unsandboxed" || true; })
  for p in "${DEBS[@]}"; do compgen -G ".deps/debs/${p}_*.deb" >/dev/null || { echo "gpu_check: could not download $p" >&2; exit 1; }; done
  cp .deps/gloo/debs/*.deb .deps/debs/
  echo "gpu_check: ready; on the GPU machine run, from the repository root, with carry" \
    '[".deps/debs", "tests/assets/janeausten", "tests/assets/tokenizer"]:'
  echo '  bash scripts/gpu_check.sh'
  exit 0
fi

OUT="${OUT:-$ROOT/outputs/gpu_check}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
tee_pid=$!
WORK="$(mktemp -d)"
# On any exit: drop the scratch folder, and let tee write the last lines before the log is read.
trap 'rm -rf "$WORK"; exec >&- 2>&-; wait $tee_pid' EXIT
start=$(date +%s)
say() { echo "gpu_check [$(($(date +%s) - start)) s]: $*"; }
fail() { say "FAIL: $*"; exit 1; }

export TITAN_VENV="${TITAN_VENV:-/opt/torch/.venv}"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
[[ -x "$TITAN_PYTHON" ]] || fail "no python at $TITAN_PYTHON (set TITAN_VENV to the venv holding torch)"
say "$("$TITAN_PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Build inputs: gloo headers (checked against this torch's gloo) and the other packages, from .debs.
compgen -G ".deps/debs/*.deb" >/dev/null || fail "no .deb files in .deps/debs: run 'scripts/gpu_check.sh prepare' first"
./scripts/setup_gloo_headers.sh
PREFIX="$ROOT/.deps/gpu-root"
rm -rf "$PREFIX"
for deb in .deps/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX"; done
LIBDIR="$PREFIX/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
BUILD="$ROOT/build-gpu"
ZLIB_ARGS=()  # zlib1g-dev's libz.so points at bookworm's libz: use the image's libz.so.1 with its headers
if [[ ! -f /usr/include/zlib.h ]]; then
  for lib in /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1; do
    [[ -e $lib ]] && ZLIB_ARGS=(-DZLIB_INCLUDE_DIR="$PREFIX/usr/include" -DZLIB_LIBRARY="$lib") && break
  done
fi
say "configuring"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTITAN_PYTHON="$TITAN_PYTHON" -DTITAN_BUILD_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr" "${ZLIB_ARGS[@]}" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; fail "configure"; }
grep -E "^-- (libtorch|CUDA/NCCL path)" "$OUT/configure.log" || true
say "building"
cmake --build "$BUILD" -j "$(nproc)" --target titan_train titan_sentencepiece >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -20 || true; fail "build"; }
ldd "$BUILD/titan_train" | grep -E "libtorch_cuda|libnccl" || fail "titan_train does not link libtorch_cuda and NCCL"
BIN="$BUILD/titan_train"
export OMP_WAIT_POLICY=passive CUBLAS_WORKSPACE_CONFIG=:4096:8  # the second: cuBLAS under debug.deterministic

# Every step's loss, at full precision, from the dump folder's metrics.jsonl (appended across resumes).
run() {  # run NAME FOLDER ARGS...: trains into FOLDER, keeps the log and NAME.metrics ("step loss grad_norm"), prints nothing
  local name=$1 folder=$2; shift 2
  "$BIN" --job.config_file configs/debug_model.toml --metrics.disable_color_printing --metrics.log_freq 1 \
    --debug.seed 42 --job.dump_folder "$folder" "$@" >"$OUT/$name.log" 2>&1 || { tail -20 "$OUT/$name.log"; fail "$name run"; }
  "$TITAN_PYTHON" scripts/metrics_columns.py "$folder/metrics.jsonl" >"$WORK/$name.metrics"
}
loss_at() { awk -v s="$2" '$1 == s {print $2}' "$WORK/$1.metrics" | tail -1; }

say "1. debug model: 1 step on the CPU, 20 steps on CUDA"
CUDA_VISIBLE_DEVICES= run cpu "$WORK/cpu" --training.steps 1
grep -q "device cpu" "$OUT/cpu.log" || fail "CUDA_VISIBLE_DEVICES= did not train on the CPU"
run cuda "$WORK/cuda" --training.steps 20 --checkpoint.enable --checkpoint.interval 10 --debug.deterministic
grep -q "device cuda:0" "$OUT/cuda.log" || fail "the CUDA run did not train on cuda:0"
grep -E "step: +(1|10|20) " "$OUT/cuda.log"
cpu1=$(loss_at cpu 1) cuda1=$(loss_at cuda 1) cuda20=$(loss_at cuda 20)
awk -v a="$cpu1" -v b="$cuda1" 'BEGIN {d = a - b; exit !(d < 1e-4 && d > -1e-4)}' || fail "step-1 loss CPU $cpu1 vs CUDA $cuda1"
awk -v a="$cuda1" -v b="$cuda20" 'BEGIN {exit !(b < a)}' || fail "loss did not fall: $cuda1 -> $cuda20"
say "   step-1 loss CPU $cpu1, CUDA $cuda1; step 20 $cuda20"

say "2. resume from step-10 on CUDA"
run resumed "$WORK/cuda" --training.steps 20 --checkpoint.enable --checkpoint.interval 10 \
  --checkpoint.load_step 10 --debug.deterministic
for s in $(seq 11 20); do
  a=$(loss_at cuda "$s") b=$(loss_at resumed "$s")
  awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; exit !(d < 1e-5 * a && d > -1e-5 * a)}' || fail "step $s after resume: $b, uninterrupted $a"
done
say "   steps 11-20 after resume equal the uninterrupted run's (1e-5); step 20: $(loss_at resumed 20)"

say "3. Llama-3.2-1B shape, bf16, seq 2048, 10 steps"
mkdir -p "$WORK/llama1b"
cat >"$WORK/llama1b/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
 "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256, "rope_theta": 500000.0,
 "rms_norm_eps": 1e-05, "tie_word_embeddings": true, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
 "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}}
JSON
"$TITAN_PYTHON" -c "import numpy as np; np.save('$WORK/tokens.npy', np.random.default_rng(0).integers(0, 128256, 4_000_000).astype(np.int32))"
run llama1b "$WORK/llama1b_out" --model.flavor from_hf --model.hf_assets_path "$WORK/llama1b" --training.dataset_path "$WORK/tokens.npy" \
  --training.dtype bfloat16 --training.seq_len 2048 --training.local_batch_size 4 --training.steps 10 \
  --activation_checkpoint.mode none --lr_scheduler.warmup_steps 2
grep -E "Peak FLOPS|size:|step: " "$OUT/llama1b.log"
say "   steps 2-10: $(sed -nE 's/.*step: +([0-9]+) .*tps: ([0-9,]+).*mfu: ([0-9.]+)%.*/\1 \2 \3/p' "$OUT/llama1b.log" |
  awk '$1 > 1 {gsub(",", "", $2); t += $2; m += $3; n++} END {if (n) printf "mean %.0f tokens/s, mean MFU %.2f%%", t / n, m / n}')"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true

say "4. memory snapshots and profiler traces on CUDA (profile_freq 2)"
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
say "all checks passed"
