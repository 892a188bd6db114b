# Shared helpers for the integration tests: each test is a bash script that runs ./run_train.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"  # TITAN_PYTHON: the venv's python with torch 2.11 and numpy
WORK="$(mktemp -d "${TMPDIR:-/tmp}/titan_it.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# A small debug run: CPU-sized batch and sequence, fixed seed, plain log lines.
SMALL=(--training.seq_len 128 --training.local_batch_size 4 --debug.seed 42 --metrics.disable_color_printing
       --metrics.log_freq 1 --activation_checkpoint.mode none)

fail() { echo "FAIL: $*" >&2; exit 1; }

# The losses of every logged step, one "step loss" pair per line.
losses() { sed -nE 's/.*step: *([0-9]+) +loss: +([0-9.]+).*/\1 \2/p' "$1"; }

# A free TCP port for a rendezvous the test sets up itself.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }

# rank_pid FOLDER R: the pid of rank R of the run whose command line names FOLDER.
rank_pid() { pgrep -f "titan_train.*$1" | while read -r p; do grep -qz "^RANK=$2$" "/proc/$p/environ" && echo "$p"; done | head -1; }

# Runs ./run_train.sh with the given arguments; stdout+stderr into $1, exit code into $RC.
train() {
  local log="$1"; shift
  set +e
  ./run_train.sh "$@" >"$log" 2>&1
  RC=$?
  set -e
}
