#!/usr/bin/env bash
# Set-up (as ./run_train.sh), build, then every test: GoogleTest unit tests and the integration
# tests that run ./run_train.sh, all through ctest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
./scripts/setup.sh
./scripts/build.sh
echo "set-up and build: $(($(date +%s) - start)) s"
ctest --test-dir "${TITAN_BUILD_DIR:-$ROOT/build}" --output-on-failure "$@"
echo "tests: $(($(date +%s) - start)) s in all"
