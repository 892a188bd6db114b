#!/usr/bin/env bash
# Idempotent set-up on Debian bookworm: the Debian packages the build needs, the project venv with
# torch 2.11 from PyPI (its libtorch is what we build against; its Python runs the references),
# gloo headers that match the wheel's gloo, the bundled corpus and its tokenizer.
# Progress goes to stdout ("setup: ..."); the first run downloads ~2.8 GB (see README).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

die() { echo "setup: error: $*" >&2; exit 1; }
elapsed() { echo "$(($(date +%s) - $1)) s"; }

PACKAGES=(
  g++ cmake make ninja-build procps curl          # procps: pgrep in the tests; curl: the gloo headers
  python3 python3-venv                            # the project venv (torch, numpy)
  libtcmalloc-minimal4                            # allocator for titan_train (+40% tokens/s here)
  libtomlplusplus-dev nlohmann-json3-dev zlib1g-dev libgtest-dev
  libsentencepiece-dev sentencepiece              # tokenizer library and spm_train
  libpcre2-dev                                    # the regex engine of tokenizer.json pre-tokenizers
  r-base-core r-cran-janeaustenr                  # the bundled corpus
)
# Python packages of the venv: the torch wheel brings libtorch, CUDA 13 and NCCL; the rest are the
# ecosystem's own readers and writers that the tests check our formats against.
PIP_PACKAGES=(torch==2.11.0 numpy safetensors==0.8.0 transformers==5.25.0 tokenizers==0.23.3 tensorboard==2.21.0 bochscpu-python==0.4.0)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  start=$(date +%s)
  echo "setup: installing ${#missing[@]} Debian packages (with their dependencies): ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed: Debian's package registry is unreachable (needed for: ${missing[*]})"
  # One line per package fetched and set up, so a slow download is seen moving.
  if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" 2>&1 |
    { grep --line-buffered -E "^(Get:|Setting up|E:)" || true; } | sed -u -E 's/^Get:[0-9]+ [^ ]+ [^ ]+ [^ ]+ /setup:   got /; s/^Setting up /setup:   set up /'; then
    die "apt-get install failed: could not install ${missing[*]} from Debian's package registry"
  fi
  for p in "${missing[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      die "Debian package $p could not be installed (is Debian's package registry reachable?)"
  done
  echo "setup: Debian packages installed in $(elapsed "$start")"
fi

# The wheel's CMake config needs the CUDA toolkit at configure time (not a GPU): it comes with the
# machine (NVIDIA's packages, which neither Debian nor PyPI serve), so it is checked, not installed;
# a build against another libtorch (Torch_DIR) does not need it.
[[ "${TITAN_CMAKE_ARGS:-}" == *-DTorch_DIR=* ]] || command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]] ||
  die "the CUDA 13 toolkit (nvcc, in /usr/local/cuda) is missing: the torch wheel's CMake config needs it to configure the build; install it from NVIDIA, or build against a CPU-only libtorch with TITAN_CMAKE_ARGS=-DTorch_DIR=..."

# The venv: a stamp names what was installed, so a changed package list reinstalls.
STAMP="$TITAN_VENV/.titan-packages"
if [[ ! -x "$TITAN_PYTHON" || "$(cat "$STAMP" 2>/dev/null)" != "${PIP_PACKAGES[*]}" ]]; then
  start=$(date +%s)
  echo "setup: making the venv $TITAN_VENV with ${PIP_PACKAGES[*]} from PyPI (~2.8 GB: torch and its CUDA 13/NCCL wheels)"
  [[ -x "$TITAN_PYTHON" ]] || /usr/bin/python3 -m venv "$TITAN_VENV" || die "could not make the venv $TITAN_VENV (python3-venv)"
  # Each wheel is named as its download starts (the largest, cuBLAS and cuDNN, are ~400 MB).
  if ! "$TITAN_PYTHON" -m pip install --disable-pip-version-check --progress-bar off "${PIP_PACKAGES[@]}" 2>&1 |
    { grep --line-buffered -E "^ *(Downloading|Installing|Successfully|ERROR)" || true; } | sed -u 's/^ */setup:   /'; then
    die "pip could not install ${PIP_PACKAGES[*]} into $TITAN_VENV (is PyPI reachable?)"
  fi
  # bochscpu imports only after its glibc shim (tests/reference/avx512_machine.py): its test checks it
  "$TITAN_PYTHON" -c "import torch, numpy, safetensors, transformers, tokenizers, tensorboard" 2>/dev/null || die "pip could not install ${PIP_PACKAGES[*]} into $TITAN_VENV (is PyPI reachable?)"
  echo "${PIP_PACKAGES[*]}" >"$STAMP"
  echo "setup: venv ready in $(elapsed "$start"): $("$TITAN_PYTHON" -c 'import torch; print("torch", torch.__version__)')"
fi

"$ROOT/scripts/setup_gloo_headers.sh"

CORPUS=tests/assets/janeausten/janeausten.txt
if [[ ! -s $CORPUS ]]; then
  echo "setup: writing $CORPUS from r-cran-janeaustenr"
  mkdir -p "$(dirname "$CORPUS")"
  # Paragraphs are separated by blank lines; books by an extra blank line.
  Rscript -e 'library(janeaustenr);
    books <- list(sensesensibility, prideprejudice, mansfieldpark, emma, northangerabbey, persuasion);
    writeLines(unlist(lapply(books, function(b) c(b, ""))), commandArgs(TRUE)[1])' "$CORPUS.tmp"
  mv "$CORPUS.tmp" "$CORPUS"
fi

TOKENIZER=tests/assets/tokenizer/tokenizer.model
if [[ ! -s $TOKENIZER ]]; then
  echo "setup: training $TOKENIZER (BPE, 2048 pieces, byte fallback)"
  mkdir -p "$(dirname "$TOKENIZER")"
  # One thread and no sampling: the same corpus always gives the same tokenizer.
  spm_train --input="$CORPUS" --model_prefix=tests/assets/tokenizer/tokenizer.tmp --vocab_size=2048 \
    --model_type=bpe --byte_fallback=true --character_coverage=1.0 --num_threads=1 \
    --input_sentence_size=0 --shuffle_input_sentence=false --minloglevel=2 >/dev/null 2>&1
  mv tests/assets/tokenizer/tokenizer.tmp.model "$TOKENIZER"
  mv tests/assets/tokenizer/tokenizer.tmp.vocab tests/assets/tokenizer/tokenizer.vocab
fi
