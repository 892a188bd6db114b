#!/usr/bin/env bash
# Every bad input is one line on stderr naming what is wrong, a non-zero exit, no stack trace.
source "$(dirname "$0")/lib.sh"

expect_error() {  # expect_error "<text the error must contain>" args...
  local want="$1"; shift
  train "$WORK/err.log" "$@" --job.dump_folder "$WORK/err"
  [[ $RC -ne 0 ]] || fail "exit 0 for: $*"
  grep -qF -- "$want" "$WORK/err.log" || { cat "$WORK/err.log"; fail "no '$want' for: $*"; }
  local errors
  errors=$(grep -c "^error: " "$WORK/err.log" || true)
  [[ $errors -eq 1 ]] || { cat "$WORK/err.log"; fail "expected one error line for: $*"; }
  ! grep -qE "terminate called|Exception raised from|frame #" "$WORK/err.log" || fail "stack trace for: $*"
}

echo "[training]
steps = 3
local_batch = 2" >"$WORK/unknown.toml"
echo "[training]
steps = \"three\"" >"$WORK/types.toml"
echo "" >"$WORK/empty.txt"

expect_error "unknown config key '--training.stepz' (did you mean '--training.steps'?)" --training.stepz 3
expect_error "unknown config key 'training.local_batch' (did you mean 'training.local_batch_size'" --job.config_file "$WORK/unknown.toml"
expect_error "training.steps expects an integer, got string" --job.config_file "$WORK/types.toml"
expect_error "cannot read config file '/nonexistent.toml'" --job.config_file /nonexistent.toml
expect_error "--optimizer.lr expects a number, got 'fast'" --optimizer.lr fast
expect_error "training.seq_len must be positive, got 0" --training.seq_len 0
expect_error "training.local_batch_size must be positive, got -1" --training.local_batch_size -1
expect_error "training.seq_len 200000 exceeds the debugmodel model's maximum sequence length 131072" --training.seq_len 200000
expect_error "model.flavor '7B' is not a llama3 flavor; valid flavors: debugmodel, 8B, 70B, 405B, from_hf" --model.flavor 7B
expect_error "model.hf_assets_path '/nonexistent' is not a folder" --model.hf_assets_path /nonexistent
expect_error "holds no tokenizer.model" --model.hf_assets_path "$WORK"
expect_error "dataset path '/nonexistent/data.jsonl' does not exist" --training.dataset_path /nonexistent/data.jsonl
expect_error "is empty (no documents)" --training.dataset_path "$WORK/empty.txt" "${SMALL[@]}"
expect_error "training.dataset 'c4' is not a bundled dataset" --training.dataset c4
expect_error "compile.enable = true: not supported yet" --compile.enable
expect_error "so data_parallel_shard_degree = -1 cannot take the leftover ranks" --parallelism.tensor_parallel_degree 2
expect_error "checkpoint.keep_latest_k must be 0 (keep all) or >= 2, got 1" --checkpoint.keep_latest_k 1
# A tokenizer larger than the flavor's vocabulary.
mkdir -p "$WORK/tok"
spm_train --input=tests/assets/janeausten/janeausten.txt --model_prefix="$WORK/tok/tokenizer" --vocab_size=3000 \
  --model_type=bpe --byte_fallback=true --input_sentence_size=20000 --minloglevel=2 >/dev/null 2>&1
expect_error "has 3000 pieces, more than model.flavor debugmodel's vocab_size 2048" --model.hf_assets_path "$WORK/tok"

# --help lists every key with type and default, and exits 0.
./run_train.sh --help >"$WORK/help.txt"
grep -q -- "--training.steps (int, default 10000)" "$WORK/help.txt" || fail "--help lacks training.steps"
grep -q -- "--checkpoint.exclude_from_loading (list\[str\], default \[\])" "$WORK/help.txt" || fail "--help lacks lists"
echo "PASS"
