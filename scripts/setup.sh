#!/usr/bin/env bash
# Idempotent set-up on Debian bookworm: installs missing packages, then makes the bundled corpus
# (Jane Austen's six novels, from r-cran-janeaustenr) and trains its tokenizer (sentencepiece BPE).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PACKAGES=(
  g++ cmake make pkg-config procps                # procps: pgrep in the DDP test
  libtorch-dev libgloo-dev libopenblas0-pthread   # libtorch 1.13 CPU; without OpenBLAS fp32 matmul is ~30x slower
  libtcmalloc-minimal4                             # allocator for titan_train (+40% tokens/s here)
  libtomlplusplus-dev nlohmann-json3-dev zlib1g-dev libgtest-dev
  libsentencepiece-dev sentencepiece               # tokenizer library and spm_train
  r-base-core r-cran-janeaustenr                   # the bundled corpus
  python3 python3-torch python3-numpy              # reference numbers for tests (Debian's python3-torch)
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

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
