#!/usr/bin/env bash
# Configures (once) and builds titan.cpp into build/ (or $TITAN_BUILD_DIR). Arguments are build
# targets (default: all). Pass cmake options through TITAN_CMAKE_ARGS, e.g. -DTorch_DIR=...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${TITAN_BUILD_DIR:-$ROOT/build}"
mkdir -p "$BUILD"
# Configure on the first build and whenever a CMakeLists.txt changed (targets may be new).
if [[ ! -f $BUILD/CMakeCache.txt ]] || [[ -n "$(find "$ROOT" -name CMakeLists.txt -newer "$BUILD/CMakeCache.txt" -not -path "$BUILD/*")" ]]; then
  echo "build: configuring $BUILD"
  # shellcheck disable=SC2086
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${TITAN_CMAKE_ARGS:-} >"$BUILD/configure.log" 2>&1 ||
    { cat "$BUILD/configure.log"; exit 1; }
  touch "$BUILD/CMakeCache.txt"
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
start=$(date +%s)
if ! cmake --build "$BUILD" -j "$(nproc)" "${targets[@]}" >"$BUILD/build.log" 2>&1; then
  grep -E "error|Error" "$BUILD/build.log" | head -40 || true
  echo "build failed: full log in $BUILD/build.log" >&2
  exit 1
fi
if grep -q "Building CXX" "$BUILD/build.log"; then echo "build: done in $(($(date +%s) - start)) s"; fi
