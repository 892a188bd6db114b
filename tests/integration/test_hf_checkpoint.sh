#!/usr/bin/env bash
# Hugging Face interop: step-1 loss of HF weights equals an independent implementation of
# LlamaForCausalLM (tests/reference/hf_llama_reference.py) to 1e-5; without an index only
# model.safetensors is read; HF -> native -> HF is bit-identical; to-hf --dtype; TorchTitan's
# model_only_hf_checkpoint flow, whose config.json keeps the model's max_position_embeddings.
source "$(dirname "$0")/lib.sh"
./scripts/setup.sh && ./scripts/build.sh titan_train titan_sentencepiece titan_checkpoint_tool
TOOL="${TITAN_BUILD_DIR:-$ROOT/build}/titan_checkpoint"

for variant in scaled tied sharded; do
  fix="$WORK/hf_$variant"
  ref=$("$TITAN_PYTHON" tests/reference/hf_llama_reference.py "$fix" $variant)
  expected=$(echo "$ref" | "$TITAN_PYTHON" -c "import json,sys; print(json.load(sys.stdin)['loss'])")
  wrong=$(echo "$ref" | "$TITAN_PYTHON" -c "import json,sys; print(json.load(sys.stdin)['loss_without_permutation'])")
  seq=$(echo "$ref" | "$TITAN_PYTHON" -c "import json,sys; print(json.load(sys.stdin)['seq_len'])")
  train "$WORK/$variant.log" --model.flavor from_hf --model.hf_assets_path "$fix" --checkpoint.enable \
    --checkpoint.initial_load_in_hf --training.dataset_path "$fix/tokens.npy" --training.seq_len "$seq" \
    --training.local_batch_size 1 --training.steps 1 --metrics.disable_color_printing --job.dump_folder "$WORK/run_$variant"
  [[ $RC -eq 0 ]] || { cat "$WORK/$variant.log"; fail "$variant: run exited $RC"; }
  got=$(losses "$WORK/$variant.log" | awk '$1 == 1 {print $2}')
  echo "$variant: step-1 loss $got, reference $expected (a forgotten q/k permutation gives $wrong)"
  awk -v a="$got" -v b="$expected" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d <= 1e-5 + 5e-6)}' ||
    fail "$variant: loss $got differs from the reference $expected"
  if [[ $variant == scaled ]]; then scaled_seq=$seq; fi
done

# Without an index, model.safetensors alone holds the model (as transformers reads it): a stray
# .safetensors beside it (here: zero embeddings sorting after it) is named and ignored.
cp -r "$WORK/hf_scaled" "$WORK/hf_stray"
"$TITAN_PYTHON" - "$WORK/hf_stray" <<'PY'
import sys
import torch
from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1] + "/model.safetensors")
save_file({"model.embed_tokens.weight": torch.zeros_like(w["model.embed_tokens.weight"])}, sys.argv[1] + "/zz-extra.safetensors")
PY
train "$WORK/stray.log" --model.flavor from_hf --model.hf_assets_path "$WORK/hf_stray" --checkpoint.enable \
  --checkpoint.initial_load_in_hf --training.dataset_path "$WORK/hf_stray/tokens.npy" --training.seq_len "$scaled_seq" \
  --training.local_batch_size 1 --training.steps 1 --metrics.disable_color_printing --job.dump_folder "$WORK/run_stray"
[[ $RC -eq 0 ]] || { cat "$WORK/stray.log"; fail "stray: run exited $RC"; }
grep -q "reading .*hf_stray/model.safetensors only, as transformers does without model.safetensors.index.json; ignored: zz-extra.safetensors" \
  "$WORK/stray.log" || { cat "$WORK/stray.log"; fail "stray: no warning"; }
[[ "$(losses "$WORK/stray.log")" == "$(losses "$WORK/scaled.log")" ]] || fail "stray: the extra file changed the weights"

# HF -> native -> HF: the same tensors, bit for bit, and a folder that loads again.
"$TOOL" from-hf "$WORK/hf_sharded" "$WORK/native/step-0" >/dev/null
"$TOOL" to-hf "$WORK/native/step-0" "$WORK/back" --max-shard-mb 0.1 >/dev/null
# --dtype: the names checkpoint.export_dtype takes, and the file holds that dtype.
set +e
bad_dtype=$("$TOOL" to-hf "$WORK/native/step-0" "$WORK/bf16" --dtype bf16 2>&1); rc=$?
set -e
[[ $rc -ne 0 && $bad_dtype == *"--dtype 'bf16' is not valid; valid: float32, bfloat16, float16"* ]] ||
  fail "to-hf --dtype bf16: $bad_dtype"
"$TOOL" to-hf "$WORK/native/step-0" "$WORK/bf16" --dtype bfloat16 >/dev/null
"$TITAN_PYTHON" - "$WORK/bf16" <<'PY' || fail "to-hf --dtype bfloat16 did not write bfloat16"
import glob, sys
from safetensors import safe_open
for f in glob.glob(sys.argv[1] + "/*.safetensors"):
    with safe_open(f, "pt") as s:
        for k in s.keys():
            assert str(s.get_slice(k).get_dtype()) == "BF16", (k, s.get_slice(k).get_dtype())
PY
"$TITAN_PYTHON" - "$WORK/hf_sharded" "$WORK/back" <<'PY' || fail "round trip changed tensors"
import json, os, struct, sys
import torch
def load(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        raw = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        h = json.loads(raw[8:8 + n])
        for k, v in h.items():
            if k != "__metadata__" and "rotary_emb" not in k:
                b, e = v["data_offsets"]
                out[k] = torch.frombuffer(bytearray(raw[8 + n + b:8 + n + e]), dtype=torch.float32).reshape(v["shape"])
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
assert set(a) == set(b), set(a) ^ set(b)
assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
index = json.load(open(os.path.join(sys.argv[2], "model.safetensors.index.json")))
assert set(index["weight_map"]) == set(b) and index["metadata"]["total_size"] > 0
assert len(set(index["weight_map"].values())) > 1, "expected several shards"
print(f"round trip: {len(a)} tensors identical over {len(set(index['weight_map'].values()))} shards")
PY
cp "$WORK/hf_sharded/tokens.npy" "$WORK/back/"
train "$WORK/back.log" --model.flavor from_hf --model.hf_assets_path "$WORK/back" --checkpoint.enable \
  --checkpoint.initial_load_in_hf --training.dataset_path "$WORK/back/tokens.npy" --training.seq_len 48 \
  --training.local_batch_size 1 --training.steps 1 --metrics.disable_color_printing --job.dump_folder "$WORK/run_back"
[[ "$(losses "$WORK/back.log")" == "$(losses "$WORK/sharded.log")" ]] || fail "the round-tripped folder gives another loss"

# model_only_hf_checkpoint: a run saves step-10 in HF layout; a new run starts from it.
train "$WORK/save.log" "${SMALL[@]}" --training.steps 10 --checkpoint.enable --checkpoint.folder hf_checkpoint \
  --checkpoint.last_save_model_only --checkpoint.last_save_in_hf --job.dump_folder "$WORK/flow"
[[ $RC -eq 0 ]] || { cat "$WORK/save.log"; fail "HF save run exited $RC"; }
step10="$WORK/flow/hf_checkpoint/step-10"
for f in config.json model.safetensors.index.json model-00001-of-00001.safetensors tokenizer.model; do
  [[ -f $step10/$f ]] || fail "step-10 lacks $f"
done
# config.json carries the model's own maximum sequence length (the flavor's), not training.seq_len.
grep -q '"max_position_embeddings": 131072' "$step10/config.json" || { cat "$step10/config.json"; fail "max_position_embeddings"; }
train "$WORK/load.log" "${SMALL[@]}" --training.steps 2 --checkpoint.enable --checkpoint.initial_load_path "$step10/" \
  --checkpoint.initial_load_model_only --checkpoint.initial_load_in_hf --job.dump_folder "$WORK/flow2"
[[ $RC -eq 0 ]] || { cat "$WORK/load.log"; fail "HF load run exited $RC"; }
grep -q "loaded the model from Hugging Face folder" "$WORK/load.log" || fail "no HF load"
# The same weights through the native path: a twin run saving natively, then a model-only load.
train "$WORK/twin.log" "${SMALL[@]}" --training.steps 10 --checkpoint.enable --checkpoint.no-last_save_model_only \
  --job.dump_folder "$WORK/twin"
train "$WORK/native.log" "${SMALL[@]}" --training.steps 2 --checkpoint.enable \
  --checkpoint.initial_load_path "$WORK/twin/checkpoint/step-10" --job.dump_folder "$WORK/twin2"
[[ $RC -eq 0 ]] || { cat "$WORK/native.log"; fail "native load run exited $RC"; }
first=$(losses "$WORK/save.log" | awk '$1 == 1 {print $2}')
last=$(losses "$WORK/save.log" | awk '$1 == 10 {print $2}')
again=$(losses "$WORK/load.log" | awk '$1 == 1 {print $2}')
native=$(losses "$WORK/native.log" | awk '$1 == 1 {print $2}')
echo "model_only_hf_checkpoint: fresh step 1 $first, step 10 $last; step 1 from the HF export $again, from native $native"
[[ "$again" == "$native" ]] || fail "HF export and native checkpoint of the same weights give $again vs $native"
awk -v a="$again" -v f="$first" 'BEGIN {exit !(a < f - 1.0)}' || fail "HF-loaded weights are not trained ($again vs fresh $first)"
# Resuming from the HF export itself is a clear error.
train "$WORK/resume.log" "${SMALL[@]}" --training.steps 12 --checkpoint.enable --checkpoint.folder hf_checkpoint \
  --job.dump_folder "$WORK/flow"
[[ $RC -ne 0 ]] && grep -q "is a Hugging Face model export" "$WORK/resume.log" || { cat "$WORK/resume.log"; fail "resume from HF"; }
# A built-in flavor checks config.json.
train "$WORK/mismatch.log" --checkpoint.enable --checkpoint.initial_load_in_hf --checkpoint.initial_load_path "$WORK/hf_scaled" \
  --job.dump_folder "$WORK/mm"
[[ $RC -ne 0 ]] && grep -q "config.json: hidden_size = 64 but this model has 256 (model.flavor differs" "$WORK/mismatch.log" ||
  { cat "$WORK/mismatch.log"; fail "flavor mismatch"; }

# The tool takes TorchTitan's flags (scripts/checkpoint_conversion: input_dir output_dir,
# --model_name, --model_flavor, --export_dtype, --hf_assets_path), checks the model against the
# checkpoint's own description, and names every wrong argument or input in one line.
tool_fails() {  # tool_fails EXPECTED ARGS...: the tool exits non-zero with one line holding EXPECTED
  local expected="$1" out rc; shift
  set +e; out=$("$TOOL" "$@" 2>&1); rc=$?; set -e
  [[ $rc -ne 0 && $out == *"$expected"* && $(wc -l <<<"$out") -eq 1 ]] || fail "titan_checkpoint $*: $out"
}
twin10="$WORK/twin/checkpoint/step-10"
"$TOOL" to-hf "$twin10" "$WORK/tt" --model_name llama3 --model_flavor debugmodel --export_dtype bfloat16 \
  --hf_assets_path tests/assets/tokenizer >/dev/null || fail "to-hf with TorchTitan's flags"
[[ -f $WORK/tt/tokenizer.model && -f $WORK/tt/config.json ]] || fail "to-hf --hf_assets_path did not copy the tokenizer"
tool_fails "$twin10: head_dim = 16 but this model has 128 (--model_flavor 8B differs; trained as llama3 debugmodel)" \
  to-hf "$twin10" "$WORK/tt8" --model_flavor 8B
tool_fails "--model_flavor '9B' is not a llama3 flavor; valid: debugmodel, 8B, 70B, 405B" to-hf "$twin10" "$WORK/tt8" --model_flavor 9B
tool_fails "--model_name llama4 but $twin10 holds a llama3 model" to-hf "$twin10" "$WORK/tt8" --model_name llama4
tool_fails "to-hf: unknown flag --model_flavour (did you mean --model_flavor?" to-hf "$twin10" "$WORK/tt8" --model_flavour 8B
tool_fails "to-hf takes STEP_DIR OUT_DIR (got 1 positional argument)" to-hf "$twin10"
tool_fails "config.json: hidden_size = 64 but this model has 256 (--model_flavor debugmodel differs)" \
  from-hf "$WORK/hf_scaled" "$WORK/scaled_native" --model_flavor debugmodel
# A non-empty output is refused without --force, and replaced whole with it; the input never.
touch "$WORK/tt/stale"
tool_fails "the output $WORK/tt exists and is not empty; pass --force to replace it" to-hf "$twin10" "$WORK/tt"
"$TOOL" to-hf "$twin10" "$WORK/tt" --force >/dev/null || fail "to-hf --force"
[[ ! -e $WORK/tt/stale && -f $WORK/tt/model.safetensors.index.json ]] || fail "to-hf --force did not replace the folder"
[[ -z "$(ls -A "$WORK" | grep -E '\.(tmp|old)-')" ]] || fail "to-hf --force left its temporary folders"
tool_fails "the output $WORK/native/step-0 exists and is not empty; pass --force" from-hf "$WORK/hf_sharded" "$WORK/native/step-0"
"$TOOL" from-hf "$WORK/hf_sharded" "$WORK/native/step-0" --force --model_name llama3 >/dev/null || fail "from-hf --force"
tool_fails "the output $WORK/twin/checkpoint is or holds the input $twin10" to-hf "$twin10" "$WORK/twin/checkpoint" --force
"$TOOL" to-torch "$twin10" "$WORK/w.pt" >/dev/null || fail "to-torch"
tool_fails "the output $WORK/w.pt exists and is not empty; pass --force to replace it" to-torch "$twin10" "$WORK/w.pt"
echo stale >"$WORK/w.pt"
"$TOOL" to-torch "$twin10" "$WORK/w.pt" --force >/dev/null || fail "to-torch --force"
"$TITAN_PYTHON" -c "import sys, torch; assert len(torch.load(sys.argv[1], weights_only=True)) > 0" "$WORK/w.pt" ||
  fail "to-torch --force did not replace the file"
# A config.json field of the wrong type is named, with its value and the type wanted.
cp -r "$WORK/hf_scaled" "$WORK/hf_typed"
sed -i 's/"hidden_size": *64/"hidden_size": "64"/' "$WORK/hf_typed/config.json"
grep -q '"hidden_size": "64"' "$WORK/hf_typed/config.json" || fail "could not make the wrongly typed config.json"
tool_fails "$WORK/hf_typed/config.json: field 'hidden_size' is \"64\" (a string), expected an integer" \
  from-hf "$WORK/hf_typed" "$WORK/typed_native"
train "$WORK/typed.log" --model.flavor from_hf --model.hf_assets_path "$WORK/hf_typed" --job.dump_folder "$WORK/typed"
[[ $RC -ne 0 ]] && grep -q "^error: $WORK/hf_typed/config.json: field 'hidden_size' is \"64\" (a string), expected an integer$" \
  "$WORK/typed.log" || { cat "$WORK/typed.log"; fail "wrongly typed config.json field"; }
# Inputs told apart: a missing folder, an HF export, an interrupted save, a folder of steps.
tool_fails "no such folder: $WORK/nowhere" to-hf "$WORK/nowhere" "$WORK/tt9"
tool_fails "$WORK/tt is a Hugging Face export (use from-hf" to-hf "$WORK/tt" "$WORK/tt9"
mkdir -p "$WORK/cut" && cp -r "$twin10" "$WORK/cut/step-10" && cp -r "$twin10" "$WORK/cut/step-12" && rm "$WORK/cut/step-12/.metadata"
tool_fails "$WORK/cut/step-12 is an interrupted save (no .metadata; the newest complete step is $WORK/cut/step-10)" inspect "$WORK/cut/step-12"
tool_fails "$WORK/cut holds step folders, not a checkpoint: name one, e.g. $WORK/cut/step-10" to-torch "$WORK/cut" "$WORK/x.pt"
tool_fails "$twin10 is a titan.cpp checkpoint, not a Hugging Face folder (use to-hf)" from-hf "$twin10" "$WORK/x"
echo "PASS"
