#!/usr/bin/env bash
# Gloo headers for compiling our Gloo backend (parallel/process_group.cpp) against the torch wheel,
# which builds gloo into libtorch_cpu but ships none of its headers. Debian's libgloo-dev of the
# same era as the wheel's gloo is unpacked into $TITAN_DEPS/gloo (never into /), then checked
# against the wheel: every gloo function libtorch_cpu exports must be in the library built from
# these headers (except transports Debian leaves out), and the vtables both define must be equal.
# bookworm's gloo (2022) fails the vtable check, trixie's (2023) too: only 2025-09's matches 2.11.
set -euo pipefail
# shellcheck source=scripts/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
die() { echo "setup: error: $*" >&2; exit 1; }

VERSION="0.0~git20250912.d97133a-2"
declare -A SHA256=(
  [libgloo-dev]=2ee01a68afe26991fbb7c5ead2815f113d37da20e2587cd339408030df7d2e2a
  [libgloo0]=41e54656af73a8221690a3285866e6f165439ecd7f3b265fa5f7ec5c544b409d
)
DEST="$TITAN_DEPS/gloo"
STAMP="$DEST/.checked"
TORCH_DIR="$("$TITAN_PYTHON" -c 'import importlib.util as u, os; print(os.path.dirname(os.path.realpath(u.find_spec("torch").origin)))')"  # one stamp for a venv reached through links; torch is found, not imported (1.7 s)
WANT="$VERSION $TORCH_DIR"
[[ "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]] && exit 0

rm -rf "$DEST"
mkdir -p "$DEST/debs"
for pkg in libgloo-dev libgloo0; do
  deb="$DEST/debs/${pkg}_${VERSION}_amd64.deb"
  if [[ -s "$TITAN_DEPS/debs/$(basename "$deb")" ]]; then
    cp "$TITAN_DEPS/debs/$(basename "$deb")" "$deb"  # brought along (the GPU machine has no network)
  else
    echo "setup: downloading $pkg $VERSION (Debian forky/sid) for the gloo headers"
    why=$(curl -fsSL --retry 3 -o "$deb" "https://deb.debian.org/debian/pool/main/g/gloo/$(basename "$deb")" 2>&1) ||
      die "could not download $(basename "$deb") from deb.debian.org (Debian's package registry): ${why#curl: }"
  fi
  echo "${SHA256[$pkg]}  $deb" | sha256sum -c --quiet - || die "$(basename "$deb"): SHA256 differs from the pinned one"
  dpkg-deb -x "$deb" "$DEST/root"
done
ln -s root/usr/include "$DEST/include"

# 1. Functions: the wheel's exported gloo symbols against the library built from these headers.
LIBGLOO="$(find "$DEST/root" -name 'libgloo.so.*' -type f | head -1)"
gloo_functions() { nm -D --defined-only "$1" | awk '$2 ~ /^[TW]$/ {print $3}' | c++filt | grep '^gloo::\|[ <(]gloo::' | grep -v 'MakeString\|c10d::\|std::' | sort -u; }
gloo_functions "$TORCH_DIR/lib/libtorch_cpu.so" >"$DEST/wheel_functions.txt"
gloo_functions "$LIBGLOO" >"$DEST/header_functions.txt"
comm -23 "$DEST/wheel_functions.txt" "$DEST/header_functions.txt" >"$DEST/missing_functions.txt"
tls=$(grep -c 'tcp::tls::' "$DEST/missing_functions.txt" || true)
others=$(grep -v 'tcp::tls::' "$DEST/missing_functions.txt" || true)
# gloo::logLevel() came after 2025-09-12; c10d's headers do not call it.
unexpected=$(echo "$others" | grep -v '^gloo::logLevel()$' | grep . || true)
[[ -z "$unexpected" ]] || die "gloo headers $VERSION lack functions the wheel's gloo exports: $(echo "$unexpected" | head -3 | tr '\n' ';') (full list: $DEST/missing_functions.txt)"

# 2. Layouts: vtables emitted from these headers against the wheel's.
CHECK_OBJ="$DEST/gloo_abi_check.o"
g++ -std=c++17 -c -O0 -DUSE_C10D_GLOO -D_GLIBCXX_USE_CXX11_ABI=1 -I"$TORCH_DIR/include" \
  -I"$TORCH_DIR/include/torch/csrc/api/include" -I"$DEST/include" "$TITAN_ROOT/scripts/gloo_abi_check.cpp" -o "$CHECK_OBJ" ||
  die "c10d's ProcessGroupGloo.hpp does not compile against gloo headers $VERSION"
declare -A ours=()
while read -r size name; do ours[$name]=$size; done < <(nm -SC "$CHECK_OBJ" | awk '$3 == "V" && $4 == "vtable" {s=$2; $1=$2=$3=""; sub(/^ +/, ""); print s, $0}')
compared=0 glooStore=0
while read -r size name; do
  [[ -n "${ours[$name]:-}" ]] || continue
  [[ "${ours[$name]}" == "$size" ]] ||
    die "gloo headers $VERSION do not match the wheel's gloo: $name is 0x${ours[$name]#"${ours[$name]%%[!0]*}"} bytes here, 0x${size#"${size%%[!0]*}"} in libtorch_cpu"
  compared=$((compared + 1))
  [[ "$name" == *GlooStore ]] && glooStore=1
done < <(nm -DSC --defined-only "$TORCH_DIR/lib/libtorch_cpu.so" | awk '$3 == "V" && $4 == "vtable" && /[gG]loo/ {s=$2; $1=$2=$3=""; sub(/^ +/, ""); print s, $0}')
((glooStore)) || die "gloo ABI check: libtorch_cpu exports no vtable of c10d::ProcessGroupGloo::GlooStore to compare with"
echo "setup: gloo headers $VERSION match the wheel's gloo: all $(wc -l <"$DEST/wheel_functions.txt") gloo functions libtorch_cpu exports but $tls of its TLS transport (unused) and gloo::logLevel() are declared; $compared vtables are equal"
echo "$WANT" >"$STAMP"
