#!/usr/bin/env bash
# Tokenizing the bundled corpus on ONE thread: titan_tokenize (tokenizer.json, our BPE) against the
# `tokenizers` package on the same documents and tokenizer.json, best of ROUNDS; prints MB/s and
# the ratio (ours / theirs; above 1 = ours faster). The tokenizer is the Llama 3-format one
# tests/reference/hf_tokenizer_reference.py trains on the corpus.
# Usage: bench/tokenizer_bench.sh [ROUNDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
"$ROOT/scripts/build.sh" titan_tokenize
source "$ROOT/scripts/env.sh"
ROUNDS="${1:-3}"
CORPUS="$ROOT/tests/assets/janeausten/janeausten.txt"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/titan_tokbench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$TITAN_PYTHON" "$ROOT/tests/reference/hf_tokenizer_reference.py" "$CORPUS" "$WORK/ref" >/dev/null
ASSETS="$WORK/ref/llama3"

ours=0
for ((r = 0; r < ROUNDS; r++)); do
  "${TITAN_BUILD_DIR:-$ROOT/build}/titan_tokenize" --threads 1 --hf_assets_path "$ASSETS" "$CORPUS" -o "$WORK/ours.npy" 2>"$WORK/log"
  mbs=$(sed -nE 's/.*\(([0-9.]+) MB\/s\).*/\1/p' "$WORK/log" | tail -1)
  ours=$(awk -v a="$ours" -v b="$mbs" 'BEGIN {print (b > a ? b : a)}')
done

# The package on the same documents (the corpus's paragraphs, as the trainer reads them), with its
# thread pool held to one thread; the ids are checked against ours.
theirs=$(RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false "$TITAN_PYTHON" - "$ASSETS" "$CORPUS" "$WORK/ours.npy" "$ROUNDS" <<'PY'
import sys, time
import numpy as np
from tokenizers import Tokenizer
assets, corpus, ours, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tok = Tokenizer.from_file(assets + "/tokenizer.json")
eos = tok.token_to_id("<|end_of_text|>")
docs, para = [], []
for line in open(corpus, encoding="utf-8").read().split("\n"):
    if line.strip(" \t\n\r\f\v"):
        para.append(line.rstrip("\r"))
    elif para:
        docs.append("\n".join(para)); para = []
if para:
    docs.append("\n".join(para))
size = sum(len(d.encode()) for d in docs) / 1e6
best = 0.0
for _ in range(rounds):
    t = time.perf_counter(); batch = tok.encode_batch(docs); best = max(best, size / (time.perf_counter() - t))
    t = time.perf_counter(); single = [tok.encode(d) for d in docs]; best = max(best, size / (time.perf_counter() - t))
ids = [i for e in batch for i in e.ids + [eos]]
assert np.load(ours).tolist() == ids, "titan_tokenize and the package disagree"
print(f"{best:.2f}")
PY
)
echo "tokenizer bench: $(wc -c <"$CORPUS") bytes of corpus, one thread, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "  titan_tokenize: $ours MB/s   tokenizers $("$TITAN_PYTHON" -c 'import tokenizers; print(tokenizers.__version__)'): $theirs MB/s   ratio $(awk -v a="$ours" -v b="$theirs" 'BEGIN {printf "%.2f", a / b}')"
