#!/usr/bin/env bash
# Configures (once) and builds titan.cpp into build/ (or $TITAN_BUILD_DIR). Arguments are build
# targets (default: all). Pass cmake options through TITAN_CMAKE_ARGS, e.g. -DTorch_DIR=...
# Progress: one line per file compiled, with the build's percentage (make) or step count (Ninja).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
BUILD="${TITAN_BUILD_DIR:-$ROOT/build}"
mkdir -p "$BUILD"
# Ninja where it is installed (scripts/setup.sh installs it): its up-to-date check takes 0.05 s
# against make's 1.1 s, paid by every ./run_train.sh (hundreds in the tests). CMAKE_GENERATOR, or a -G
# in TITAN_CMAKE_ARGS, picks another. A build folder made by another generator is emptied of that
# generator's files and configured afresh (a full build).
GENERATOR="${CMAKE_GENERATOR:-}"
[[ -n $GENERATOR ]] || { command -v ninja >/dev/null && GENERATOR=Ninja || GENERATOR="Unix Makefiles"; }
GENERATOR_ARGS=(-G "$GENERATOR")
if [[ " ${TITAN_CMAKE_ARGS:-}" == *" -G"* ]]; then
  GENERATOR_ARGS=()  # TITAN_CMAKE_ARGS names it
elif [[ -f $BUILD/CMakeCache.txt ]] && ! grep -qx "CMAKE_GENERATOR:INTERNAL=$GENERATOR" "$BUILD/CMakeCache.txt"; then
  echo "build: $BUILD was made by another generator: configuring it for $GENERATOR (a full build)"
  find "$BUILD" -name CMakeFiles -prune -exec rm -rf {} +
  find "$BUILD" -name Makefile -delete
  rm -f "$BUILD"/{CMakeCache.txt,build.ninja,.ninja_log,.ninja_deps}
fi
# Configure on the first build and whenever a CMakeLists.txt changed (targets may be new).
if [[ ! -f $BUILD/CMakeCache.txt ]] || [[ -n "$(find "$ROOT" -name CMakeLists.txt -newer "$BUILD/CMakeCache.txt" -not -path "$BUILD/*")" ]]; then
  echo "build: configuring $BUILD"
  # shellcheck disable=SC2086
  cmake -S "$ROOT" -B "$BUILD" "${GENERATOR_ARGS[@]}" -DCMAKE_BUILD_TYPE=Release -DTITAN_PYTHON="$TITAN_PYTHON" ${TITAN_CMAKE_ARGS:-} >"$BUILD/configure.log" 2>&1 ||
    { grep -E "Error|error" -A5 "$BUILD/configure.log" | head -40 || true; echo "build: configuring failed: full log in $BUILD/configure.log" >&2; exit 1; }
  grep -E "^-- (libtorch|CUDA/NCCL path):" "$BUILD/configure.log" | sed 's/^-- /build: /'
  touch "$BUILD/CMakeCache.txt"
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
start=$(date +%s)
# Compiler lines become "build: [ 42%] trainer/trainer.cpp" (make) or "build: [12/80] trainer/trainer.cpp"
# (Ninja); the whole output stays in build.log.
set +e
cmake --build "$BUILD" -j "$(nproc)" "${targets[@]}" 2>&1 | tee "$BUILD/build.log" |
  sed -u -nE 's#^\[ *([0-9]+%|[0-9]+/[0-9]+)\] Building (CXX|CUDA) object .*/([^/]+/[^/]+\.(cpp|cu))\.o$#build: [\1] \3#p'
status=${PIPESTATUS[0]}
set -e
if ((status != 0)); then
  grep -E "error|Error" "$BUILD/build.log" | head -40 || true
  echo "build failed: full log in $BUILD/build.log" >&2
  exit 1
fi
if grep -qE "Building (CXX|CUDA)" "$BUILD/build.log"; then echo "build: done in $(($(date +%s) - start)) s"; fi
