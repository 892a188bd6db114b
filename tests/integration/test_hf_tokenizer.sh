#!/usr/bin/env bash
# A Hugging Face tokenizer.json folder (made by the real `tokenizers` package) trains the debug
# model; titan_tokenize's .npy holds the package's ids (TorchTitan's BOS/EOS rule) and trains too;
# a folder with both tokenizer files says which one it uses; a bad tokenizer.json stops the run
# before training with one line naming the file and field.
source "$(dirname "$0")/lib.sh"

"$TITAN_PYTHON" tests/reference/hf_tokenizer_reference.py tests/assets/janeausten/janeausten.txt "$WORK/ref" >/dev/null
ASSETS="$WORK/ref/llama3"

train "$WORK/run.log" "${SMALL[@]}" --training.steps 10 --optimizer.lr 1e-3 --model.hf_assets_path "$ASSETS" \
  --job.dump_folder "$WORK/out"
[[ $RC -eq 0 ]] || { cat "$WORK/run.log"; fail "training on tokenizer.json exited $RC"; }
grep -q "Tokenizer $ASSETS/tokenizer.json: 1911 pieces, BOS 1903, EOS 1904" "$WORK/run.log" || fail "tokenizer line missing"
losses "$WORK/run.log" >"$WORK/losses"
[[ $(wc -l <"$WORK/losses") -eq 10 ]] || fail "expected 10 logged steps"
awk 'NR == 1 {a = $2} END {exit !($2 < a - 1.0)}' "$WORK/losses" || fail "loss did not fall: $(tr '\n' ' ' <"$WORK/losses")"

# titan_tokenize on a text file (one document per line) and a JSON-lines file, against the package.
printf '%s\n' "It is a truth universally acknowledged, that a single man" "café 東京 🙂 1234567 <|end_of_text|> x" \
  "  spaces   and	tabs  " >"$WORK/docs.txt"
printf '%s\n' '{"text": "First JSON document.\nWith a second line."}' '{"text": "Second: naïve 42"}' >"$WORK/docs.jsonl"
# same_as_package ASSETS NPY DTYPE: NPY holds the package's ids of the documents, as DTYPE.
same_as_package() {
  "$TITAN_PYTHON" - "$1" "$WORK" "$2" "$3" <<'PY' || fail "titan_tokenize's ids ($2) differ from the tokenizers package's"
import json, sys
import numpy as np
from tokenizers import Tokenizer
assets, work, npy, dtype = sys.argv[1:]
tok = Tokenizer.from_file(assets + "/tokenizer.json")
bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
docs = open(work + "/docs.txt", encoding="utf-8").read().splitlines()
docs += [json.loads(line)["text"] for line in open(work + "/docs.jsonl", encoding="utf-8")]
# TorchTitan: the package's encode (its template adds BOS), then EOS, which the template does not add.
expected = [i for d in docs for i in tok.encode(d).ids + [eos]]
got = np.load(npy)
assert got.dtype == np.dtype(dtype) and got.ndim == 1, got.dtype
assert got.tolist() == expected, (got.tolist()[:40], expected[:40])
assert got[0] == bos
print(f"{len(expected)} ids equal")
PY
}
./build/titan_tokenize --hf_assets_path "$ASSETS" "$WORK/docs.txt" "$WORK/docs.jsonl" -o "$WORK/tokens.npy" 2>"$WORK/tok.log" ||
  { cat "$WORK/tok.log"; fail "titan_tokenize exited $?"; }
grep -q "titan_tokenize: 5 documents" "$WORK/tok.log" || { cat "$WORK/tok.log"; fail "no progress line"; }
same_as_package "$ASSETS" "$WORK/tokens.npy" uint16

# A vocabulary past uint16 (Llama 3's is 128,256): 68,100 more added tokens give uint32 ids.
mkdir -p "$WORK/big" && cp "$ASSETS/tokenizer_config.json" "$WORK/big/"
"$TITAN_PYTHON" -c "
import sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1] + '/tokenizer.json')
tok.add_tokens([f'<|extra_{i}|>' for i in range(68100)])
tok.save(sys.argv[2] + '/tokenizer.json')" "$ASSETS" "$WORK/big"
sed -i 's/x$/x <|extra_67000|><|reserved_special_token_5|>/' "$WORK/docs.txt"
./build/titan_tokenize --hf_assets_path "$WORK/big" "$WORK/docs.txt" "$WORK/docs.jsonl" -o "$WORK/big.npy" 2>"$WORK/big.log" ||
  { cat "$WORK/big.log"; fail "titan_tokenize with a large vocabulary exited $?"; }
grep -q "uint32, .* vocabulary 70011" "$WORK/big.log" || { cat "$WORK/big.log"; fail "not uint32"; }
same_as_package "$WORK/big" "$WORK/big.npy" uint32
train "$WORK/npy.log" "${SMALL[@]}" --training.steps 2 --training.dataset_path "$WORK/tokens.npy" --job.dump_folder "$WORK/npy"
[[ $RC -eq 0 ]] || { cat "$WORK/npy.log"; fail "training on titan_tokenize's .npy exited $RC"; }

# A tokenizer.model folder: the ids of spm_encode (package sentencepiece), with BOS and EOS per line.
SPM=tests/assets/tokenizer
./build/titan_tokenize --hf_assets_path "$SPM" "$WORK/docs.txt" -o "$WORK/spm.npy" 2>"$WORK/spm.log" ||
  { cat "$WORK/spm.log"; fail "titan_tokenize on tokenizer.model exited $?"; }
bos=$(($(grep -n -P '^<s>\t' "$SPM/tokenizer.vocab" | cut -d: -f1) - 1))
eos=$(($(grep -n -P '^</s>\t' "$SPM/tokenizer.vocab" | cut -d: -f1) - 1))
spm_encode --model "$SPM/tokenizer.model" --output_format=id <"$WORK/docs.txt" | sed "s/^/$bos /; s/\$/ $eos/" | tr ' ' '\n' >"$WORK/spm.expected"
"$TITAN_PYTHON" -c "import numpy as np, sys; print('\n'.join(map(str, np.load(sys.argv[1]).tolist())))" "$WORK/spm.npy" >"$WORK/spm.got"
[[ $(wc -l <"$WORK/spm.got") -gt 10 ]] && diff -q "$WORK/spm.expected" "$WORK/spm.got" >/dev/null || fail "titan_tokenize's sentencepiece ids differ from spm_encode's"

# Both tokenizer files: tokenizer.json is used, and the log says so.
cp tests/assets/tokenizer/tokenizer.model "$ASSETS/"
train "$WORK/both.log" "${SMALL[@]}" --training.steps 1 --model.hf_assets_path "$ASSETS" --job.dump_folder "$WORK/both"
[[ $RC -eq 0 ]] || { cat "$WORK/both.log"; fail "training with both tokenizer files exited $RC"; }
grep -q "holds tokenizer.json and tokenizer.model: using tokenizer.json" "$WORK/both.log" || fail "choice not logged"

# A model type other than BPE: one line naming the file and field, and no training.
mkdir -p "$WORK/bad"
cp "$ASSETS/tokenizer_config.json" "$WORK/bad/"
sed 's/"type":"BPE"/"type":"Unigram"/; s/"type": "BPE"/"type": "Unigram"/' "$ASSETS/tokenizer.json" >"$WORK/bad/tokenizer.json"
train "$WORK/bad.log" "${SMALL[@]}" --training.steps 1 --model.hf_assets_path "$WORK/bad" --job.dump_folder "$WORK/badrun"
[[ $RC -ne 0 ]] || fail "a Unigram tokenizer.json trained"
grep -q "$WORK/bad/tokenizer.json: model.type 'Unigram' is not supported (valid: BPE)" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no clear error"; }
! grep -q "step:" "$WORK/bad.log" || fail "training started despite the bad tokenizer"
./build/titan_tokenize --hf_assets_path "$ASSETS" "$WORK/missing.txt" -o "$WORK/x.npy" 2>"$WORK/err.log" && fail "missing input accepted"
grep -q "^titan_tokenize: error: dataset path '$WORK/missing.txt' does not exist$" "$WORK/err.log" || { cat "$WORK/err.log"; fail "no clear error"; }
[[ ! -e "$WORK/x.npy" && ! -e "$WORK/x.npy.partial" ]] || fail "a failed titan_tokenize left a file"
echo "PASS"
