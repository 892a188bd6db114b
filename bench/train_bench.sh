#!/usr/bin/env bash
# Training throughput: titan_train against PyTorch 2.11 itself (bench/eager_reference.py) on the
# same model, init, data, batch, sequence length, threads and OMP_WAIT_POLICY, run in turn each
# round after a warm-up round: (a) eager, idiomatic (SDPA, nn.RMSNorm, fused AdamW); (b) the same
# with tcmalloc preloaded, as titan_train links it (the allocator is not our merit); (c) the model
# under torch.compile (inductor on CPU; its warm-up step, mostly compilation, is reported apart and
# kept out of tokens/s). Prints tokens/s and peak memory of each, our MFU against the GEMM peak our
# start-up probe measures in the same run, the ratio to each opponent per round and its median,
# and the CPU's model and vector/matrix flags.
# Usage: bench/train_bench.sh [debug|long|mid] [ROUNDS] [float32|bfloat16]   (threads = the machine's cores)
#   debug: batch 8 x seq 256; long: the debug model at batch 4 x seq 2048 (attention-bound);
#   mid: dim 1024, 8 layers, GQA 16/8, vocab 32k, seq 1024.
# bfloat16 is training.dtype = bfloat16 for all (weights, gradients, AdamW state in bf16).
# BENCH_OPPONENTS (default "eager tcmalloc compile") picks the opponents.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"  # TITAN_PYTHON
MODEL="${1:-debug}"
ROUNDS="${2:-3}"
DTYPE="${3:-float32}"
[[ "$DTYPE" == float32 || "$DTYPE" == bfloat16 ]] || { echo "usage: $0 [debug|long|mid] [ROUNDS] [float32|bfloat16]" >&2; exit 2; }
read -r -a OPPONENTS <<<"${BENCH_OPPONENTS:-eager tcmalloc compile}"
for o in "${OPPONENTS[@]}"; do
  [[ $o == eager || $o == tcmalloc || $o == compile ]] || { echo "BENCH_OPPONENTS: '$o' is not eager, tcmalloc or compile" >&2; exit 2; }
done
TCMALLOC=$(ldconfig -p | awk '/libtcmalloc_minimal\.so\.4 / {print $NF; exit}')
[[ -n $TCMALLOC ]] || { echo "libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)" >&2; exit 1; }
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_train titan_sentencepiece
WORK="$(mktemp -d)"
trap '[[ -n ${BENCH_KEEP:-} ]] || rm -rf "$WORK"' EXIT
THREADS=$(nproc)
# The same OpenMP setting for both programs (run_train.sh sets it for the trainer).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
case "$MODEL" in
  debug) DIM=256 LAYERS=6 HEADS=16 KV=16 FFN=768 VOCAB=2048 SEQ=256 BATCH=8 STEPS=6 ;;
  long) DIM=256 LAYERS=6 HEADS=16 KV=16 FFN=768 VOCAB=2048 SEQ=2048 BATCH=4 STEPS=4 ;;
  mid) DIM=1024 LAYERS=8 HEADS=16 KV=8 FFN=2816 VOCAB=32000 SEQ=1024 BATCH=1 STEPS=4 ;;
  *) echo "usage: $0 [debug|long|mid] [ROUNDS] [float32|bfloat16]" >&2; exit 2 ;;
esac
STEPS="${BENCH_STEPS:-$STEPS}"  # eager bf16 on CPUs without bf16 instructions is slow: fewer steps keep a round short
mkdir -p "$WORK/model"
cat >"$WORK/model/config.json" <<JSON
{"hidden_size": $DIM, "num_hidden_layers": $LAYERS, "num_attention_heads": $HEADS, "num_key_value_heads": $KV,
 "intermediate_size": $FFN, "vocab_size": $VOCAB, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
 "max_position_embeddings": 131072, "tie_word_embeddings": false,
 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192}}
JSON
"$TITAN_PYTHON" -c "import numpy as np; np.save('$WORK/tokens.npy', np.random.default_rng(0).integers(0, $VOCAB, 4000000).astype(np.int32))"

ours() {
  OMP_NUM_THREADS=$THREADS "${TITAN_BUILD_DIR:-$ROOT/build}/titan_train" --job.config_file "$ROOT/configs/debug_model.toml" \
    --model.flavor from_hf --model.hf_assets_path "$WORK/model" --training.dataset_path "$WORK/tokens.npy" \
    --training.seq_len $SEQ --training.local_batch_size $BATCH --training.steps $STEPS --metrics.log_freq 1 \
    --activation_checkpoint.mode none --metrics.disable_color_printing --training.dtype "$DTYPE" \
    --job.dump_folder "$WORK/out" >"$WORK/ours.log" 2>&1
  # tokens/s over steps 2..N (step 1 is the warm-up), peak RSS, MFU of the last step, measured peak
  sed -nE 's/.*step: *([0-9]+) .*memory: +([0-9.]+)GiB.*tps: ([0-9,]+) .*mfu: ([0-9.]+)%.*/\1 \2 \3 \4/p' "$WORK/ours.log" |
    tr -d , | awk '$1 > 1 {s += 1 / $3; n++; m = $2; mfu = $4} END {printf "%.1f %.2f %.1f", n / s, m, mfu}'
}
theirs() {  # theirs eager|tcmalloc|compile: tokens/s, peak RSS (GiB), warm-up seconds
  local preload="" flags=()
  [[ $1 == tcmalloc ]] && preload=$TCMALLOC
  [[ $1 == compile ]] && flags=(--compile)
  LD_PRELOAD=$preload "$TITAN_PYTHON" "$ROOT/bench/eager_reference.py" "$WORK/model/config.json" "$WORK/tokens.npy" \
    --batch $BATCH --seq $SEQ --steps $STEPS --warmup 1 --threads $THREADS --dtype "$DTYPE" "${flags[@]}" 2>"$WORK/$1.err" |
    "$TITAN_PYTHON" -c "import json, sys; d = json.load(sys.stdin); print('%.1f %.2f %.1f' % (d['tps'], d['peak_rss_gib'], d['warmup_s']))" ||
    { cat "$WORK/$1.err" >&2; return 1; }
}
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "model $MODEL: dim $DIM, $LAYERS layers, $HEADS heads ($KV kv), ffn $FFN, vocab $VOCAB, seq $SEQ, batch $BATCH, $DTYPE, $THREADS threads"
echo "cpu: $(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); flags: $(grep -m1 "^flags" /proc/cpuinfo |
  tr ' ' '\n' | grep -xE "avx2|fma|avx512f|avx512_bf16|avx512_fp16|avx512_vnni|amx_tile|amx_bf16" | paste -sd' ')"
# Warm-up round (page cache, allocator, inductor's compile cache); BENCH_WARMUP=0 skips it where one
# eager step takes minutes (bf16 mid model on CPUs without bf16 instructions).
if [[ "${BENCH_WARMUP:-1}" != 0 ]]; then
  ours >/dev/null
  for o in "${OPPONENTS[@]}"; do theirs "$o" >/dev/null; done
fi
declare -A ratios mem_ratios
for ((r = 1; r <= ROUNDS; r++)); do
  read -r our_tps our_mem our_mfu <<<"$(ours)"
  line="round $r: titan.cpp $our_tps tok/s (peak $our_mem GiB, mfu $our_mfu%)"
  for o in "${OPPONENTS[@]}"; do
    read -r tps mem warm <<<"$(theirs "$o")"
    ratio=$(awk -v a="$our_tps" -v b="$tps" 'BEGIN {printf "%.3f", a / b}')
    ratios[$o]+="$ratio "
    mem_ratios[$o]+="$(awk -v a="$our_mem" -v b="$mem" 'BEGIN {printf "%.3f", a / b}') "
    extra=""
    [[ $o == compile ]] && extra=", warm-up step $warm s"
    line+="  $o $tps tok/s (peak $mem GiB$extra) x$ratio"
  done
  echo "$line"
done
peak=$(grep -m1 "Peak FLOPS" "$WORK/ours.log" | sed -E 's/.*MFU: ([0-9.e+]+).*/\1/')
for o in "${OPPONENTS[@]}"; do
  echo "median titan.cpp / $o: tokens/s $(tr ' ' '\n' <<<"${ratios[$o]}" | grep . | median), peak memory $(tr ' ' '\n' <<<"${mem_ratios[$o]}" | grep . | median)"
done
echo "GEMM peak measured by titan_train: $peak FLOP/s (MFU above is against it)"
