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
expect_error "holds neither tokenizer.json (Hugging Face BPE) nor tokenizer.model" --model.hf_assets_path "$WORK"
expect_error "dataset path '/nonexistent/data.jsonl' does not exist" --training.dataset_path /nonexistent/data.jsonl
expect_error "is empty (no documents)" --training.dataset_path "$WORK/empty.txt" "${SMALL[@]}"
expect_error "training.dataset 'c4' is not a bundled dataset" --training.dataset c4
expect_error "compile.enable = true: not supported yet" --compile.enable
expect_error "so data_parallel_shard_degree = -1 cannot take the leftover ranks" --parallelism.tensor_parallel_degree 2
expect_error "checkpoint.keep_latest_k must be 0 (keep all) or >= 2, got 1" --checkpoint.keep_latest_k 1
expect_error "comm.train_timeout_seconds must be positive, got 0" --comm.train_timeout_seconds 0
expect_error "comm.init_timeout_seconds must be positive, got -5" --comm.init_timeout_seconds -5
expect_error "checkpoint.exclude_from_loading = 'data_loader' is not valid; valid values: model, optimizer, lr_scheduler, dataloader, train_state (did you mean 'dataloader'?)" \
  --checkpoint.enable --checkpoint.exclude_from_loading data_loader
# A DCP folder whose .metadata is not a pickle DCP writes (more cases: test_dcp.sh).
mkdir -p "$WORK/dcp/step-10" && printf '\x80\x04pickle' >"$WORK/dcp/step-10/.metadata" && : >"$WORK/dcp/step-10/__0_0.distcp"
expect_error "dcp/step-10/.metadata: pickle byte 3: unsupported opcode 0x70" \
  --checkpoint.enable --checkpoint.initial_load_path "$WORK/dcp/step-10" --checkpoint.initial_load_model_only
# Launcher environment: a port that is not a number, TorchTitan's dry-run modes.
set +e
MASTER_PORT=http NGPU=2 ./run_train.sh --training.steps 1 --job.dump_folder "$WORK/port" >"$WORK/port.log" 2>&1; rc=$?
COMM_MODE=fake_backend ./run_train.sh --training.steps 1 >"$WORK/comm.log" 2>&1; comm_rc=$?
set -e
[[ $rc -ne 0 ]] && grep -q "MASTER_PORT='http' is not a port number (1-65535)" "$WORK/port.log" || { cat "$WORK/port.log"; fail "MASTER_PORT=http"; }
[[ $comm_rc -ne 0 ]] && grep -q "COMM_MODE=fake_backend (TorchTitan's dry run without real ranks) is not supported yet" "$WORK/comm.log" ||
  { cat "$WORK/comm.log"; fail "COMM_MODE"; }
# Text with NUL bytes is text: it trains.
printf 'A first document with a NUL\0byte in it, and enough words to fill a few tokens.\n\nA second one.\n' >"$WORK/nul.txt"
train "$WORK/nul.log" "${SMALL[@]}" --training.steps 1 --training.dataset_path "$WORK/nul.txt" --job.dump_folder "$WORK/nul"
[[ $RC -eq 0 ]] || { cat "$WORK/nul.log"; fail "text with a NUL byte"; }
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
