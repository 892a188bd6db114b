#!/usr/bin/env bash
# Per-rank training-state memory under FSDP and TP: a ~112M-parameter Llama 3 (dim 768, 10 layers,
# vocab 32000) trained 2 steps on 1 rank, FSDP2, FSDP4, TP2, TP4 and FSDP2 x TP2 (Gloo, fp32). Prints, per layout, what rank 0
# holds in parameters + gradients + AdamW state (counted from the tensors) and its share of the
# unsharded state, with the peak resident memory of rank 0 for reference (activations and gathered
# weights included; no rank holds the whole model at start-up: it makes its pieces one parameter at a time).
# Usage: bench/fsdp_memory.sh
# 2026-12-05, 2 cores (AMD EPYC, AVX-512): 1 rank 1710.2 MiB (1.000, peak RSS 2.07 GiB), FSDP2 855.1 MiB
# (0.500, 1.67 GiB), FSDP4 427.6 MiB (0.250, 1.24 GiB), TP2 855.2 MiB (0.500, 1.22 GiB), TP4 427.7 MiB
# (0.250, 0.80 GiB), FSDP2 x TP2 427.6 MiB (0.250, 1.06 GiB); TP keeps the norms whole. The peaks are
# those of 2026-12-02 within 4%, when every rank first built the whole model: training, not start-up, sets them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"  # TITAN_PYTHON
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_train titan_sentencepiece
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/model"
cat >"$WORK/model/config.json" <<JSON
{"hidden_size": 768, "num_hidden_layers": 10, "num_attention_heads": 12, "num_key_value_heads": 4,
 "intermediate_size": 2048, "vocab_size": 32000, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
 "max_position_embeddings": 2048, "tie_word_embeddings": false}
JSON
"$TITAN_PYTHON" -c "import numpy as np; np.save('$WORK/tokens.npy', np.random.default_rng(0).integers(0, 32000, 200000).astype(np.int32))"

echo "layout      params+grads+optimizer on rank 0  share of unsharded  peak RSS rank 0"
for layout in "1rank 1 1 1" "FSDP2 2 2 1" "FSDP4 4 4 1" "TP2 2 1 2" "TP4 4 1 4" "FSDP2xTP2 4 2 2"; do
  read -r name ngpu shard tp <<<"$layout"
  NGPU=$ngpu "$ROOT/run_train.sh" --model.flavor from_hf --model.hf_assets_path "$WORK/model" \
    --training.dataset_path "$WORK/tokens.npy" --training.seq_len 64 --training.local_batch_size 1 \
    --training.steps 2 --training.mixed_precision_param float32 --metrics.log_freq 1 \
    --parallelism.data_parallel_shard_degree "$shard" --parallelism.tensor_parallel_degree "$tp" \
    --metrics.disable_color_printing --job.dump_folder "$WORK/out_$name" >"$WORK/$name.log" 2>&1 ||
    { tail -20 "$WORK/$name.log"; exit 1; }
  state=$(sed -nE 's/.*Training state on this rank: .* = ([0-9.]+) MiB \(([0-9.]+) of the unsharded ([0-9.]+) MiB\).*/\1 \2 \3/p' "$WORK/$name.log" | head -1)
  rss=$(sed -nE 's/.*step:  2 .*memory: +([0-9.]+GiB).*/\1/p' "$WORK/$name.log" | head -1)
  read -r mib share full _ <<<"$state"
  printf "%-11s %10s MiB of %s MiB %20s %16s\n" "$name" "$mib" "$full" "$share" "$rss"
done
