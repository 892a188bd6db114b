#!/usr/bin/env bash
# Train a Llama 3 model: installs what is missing, builds if needed, then launches the trainer.
#   NGPU=1 CONFIG_FILE=configs/debug_model.toml ./run_train.sh --training.steps 30
# Every argument is a --section.key override of the TOML (see ./run_train.sh --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NGPU="${NGPU:-1}"
CONFIG_FILE="${CONFIG_FILE:-$ROOT/configs/debug_model.toml}"
export LOG_RANK="${LOG_RANK:-0}"

"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_train titan_sentencepiece

if [[ "$NGPU" != "1" ]]; then
  echo "error: NGPU=$NGPU: multi-rank launch is not supported yet (run with NGPU=1)" >&2
  exit 2
fi
exec "${TITAN_BUILD_DIR:-$ROOT/build}/titan_train" --job.config_file "$CONFIG_FILE" "$@"
