#!/usr/bin/env bash
# The Llama 4 MoE debug model (configs/llama4_debug.toml) over Gloo ranks on the same global batch
# of 8 sequences of 64: FSDP2, FSDP4, DDP2, HSDP 2x2, FSDP2 with gradient accumulation, CP2, TP2,
# FSDP2 x TP2, PP2 and FSDP2 with full activation checkpointing give the same loss and grad_norm as
# one rank at each of 5 steps within 1e-5 relative, with TorchTitan's routing and with forced load
# balance; the balancing biases are saved. Expert parallelism (FSDP2 + EP2, FSDP4 + EP4, TP2 + EP2 with etp 1,
# FSDP2 x TP2 + EP2 + ETP2, HSDP + EP2, CP2 + EP2, PP2 x FSDP2 + EP2, and FSDP4 + EP2 whose experts
# FSDP shards over efsdp 2, on dim 0 or, with 2 experts, dim 1) gives the same numbers; checkpoints
# resume across EP layouts; Hugging Face folders load and save; what is not built yet is a one-line error.
source "$(dirname "$0")/lib.sh"
export CONFIG_FILE=./configs/llama4_debug.toml
LAYOUT_ARGS=("${SMALL[@]}" --training.seq_len 64 --training.global_batch_size 8 --training.mixed_precision_param float32
             --lr_scheduler.decay_ratio 0 --checkpoint.enable --checkpoint.interval 5 --checkpoint.no-last_save_model_only)
make_seed
grep -q "Model llama4 debugmodel size: 15,017,216 total parameters" "$WORK/seed.log" || { cat "$WORK/seed.log"; fail "not the llama4 debugmodel"; }

for balance in routed forced; do
  flag=(); [[ $balance == forced ]] && flag=(--debug.moe_force_load_balance)
  layout_run "one_$balance" 1 7 --training.local_batch_size 8 "${flag[@]}"
  layout_run "fsdp2_$balance" 2 7 $(degrees 1 2) --training.local_batch_size 4 "${flag[@]}"
  layout_run "cp2_$balance" 2 5 $(degrees 1 1) --parallelism.context_parallel_degree 2 --training.local_batch_size 8 "${flag[@]}"
  layout_run "tp2_$balance" 2 5 $(degrees 1 1) --parallelism.tensor_parallel_degree 2 --training.local_batch_size 8 "${flag[@]}"
  for name in fsdp2 cp2 tp2; do
    near "$WORK/one_$balance.metrics" "$WORK/${name}_$balance.metrics" || fail "$name ($balance) differs from one rank"
  done
done
layout_run fsdp4 4 5 $(degrees 1 4) --training.local_batch_size 2
layout_run ddp2 2 5 $(degrees 2 1) --training.local_batch_size 4
layout_run hsdp 4 5 $(degrees 2 2) --training.local_batch_size 2
layout_run fsdp2_accum 2 5 $(degrees 1 2) --training.local_batch_size 2
layout_run pp2 2 5 $(degrees 1 1) --parallelism.pipeline_parallel_degree 2 --parallelism.pipeline_parallel_schedule 1F1B \
  --training.local_batch_size 8
layout_run fsdp2_ac 2 5 $(degrees 1 2) --training.local_batch_size 4 --activation_checkpoint.mode full
layout_run fsdp2_tp2 4 5 $(degrees 1 2) --parallelism.tensor_parallel_degree 2 --training.local_batch_size 4
for name in fsdp4 ddp2 hsdp fsdp2_accum pp2 fsdp2_ac fsdp2_tp2; do
  near "$WORK/one_routed.metrics" "$WORK/$name.metrics" || fail "$name differs from one rank"
done

# Expert parallelism: the experts of each layer spread over the ep ranks, tokens sent to them and back.
ep_() { echo --parallelism.expert_parallel_degree "$1" --parallelism.expert_tensor_parallel_degree "$2"; }
for balance in routed forced; do
  flag=(); [[ $balance == forced ]] && flag=(--debug.moe_force_load_balance)
  layout_run "fsdp2_ep2_$balance" 2 7 $(degrees 1 2) $(ep_ 2 1) --training.local_batch_size 4 "${flag[@]}"
  layout_run "fsdp4_ep4_$balance" 4 5 $(degrees 1 4) $(ep_ 4 1) --training.local_batch_size 2 "${flag[@]}"
  layout_run "tp2_ep2_$balance" 2 5 $(degrees 1 1) --parallelism.tensor_parallel_degree 2 $(ep_ 2 1) \
    --training.local_batch_size 8 "${flag[@]}"
  layout_run "fsdp2_tp2_ep2_etp2_$balance" 4 5 $(degrees 1 2) --parallelism.tensor_parallel_degree 2 $(ep_ 2 2) \
    --training.local_batch_size 4 "${flag[@]}"
  for name in fsdp2_ep2 fsdp4_ep4 tp2_ep2 fsdp2_tp2_ep2_etp2; do
    near "$WORK/one_$balance.metrics" "$WORK/${name}_$balance.metrics" || fail "$name ($balance) differs from one rank"
  done
done
grep -q "Applied Expert Parallelism to the model: 4 ranks, each holding layers.1.moe.experts.w1 (2, 512, 256) of (8, 512, 256)" \
  "$WORK/fsdp4_ep4_routed.log" || fail "fsdp4_ep4 did not cut the experts over ep"
grep -q "Applied Expert Parallelism to the model: 2 ranks, each holding layers.1.moe.experts.w1 (4, 256, 256) of (8, 512, 256), expert tensor parallel 2" \
  "$WORK/fsdp2_tp2_ep2_etp2_routed.log" || fail "fsdp2_tp2_ep2_etp2 did not cut the experts over ep and etp"
layout_run hsdp_ep2 4 5 $(degrees 2 2) $(ep_ 2 1) --training.local_batch_size 2
layout_run cp2_ep2 2 5 $(degrees 1 1) --parallelism.context_parallel_degree 2 $(ep_ 2 1) --training.local_batch_size 8
layout_run pp2_fsdp2_ep2 4 5 $(degrees 1 2) $(ep_ 2 1) --parallelism.pipeline_parallel_degree 2 \
  --parallelism.pipeline_parallel_schedule 1F1B --training.local_batch_size 4
for name in hsdp_ep2 cp2_ep2 pp2_fsdp2_ep2; do
  near "$WORK/one_routed.metrics" "$WORK/$name.metrics" || fail "$name differs from one rank"
done

# Checkpoints know no layout and carry the balancing biases: FSDP2's step 5 continues on one rank,
# one rank's under FSDP4 x EP4, and FSDP2 x EP2's (experts cut on dim 0) on one rank.
layout_resume fsdp2_routed fsdp2_to_one 1 7 fsdp2_routed --training.local_batch_size 8
layout_resume one_routed one_to_fsdp4_ep4 4 7 one_routed $(degrees 1 4) $(ep_ 4 1) --training.local_batch_size 2
layout_resume fsdp2_ep2_routed ep2_to_one 1 7 fsdp2_ep2_routed --training.local_batch_size 8
grep -q '"layers.5.moe.expert_bias"' "$WORK/one_routed/checkpoint/step-5/.metadata" || fail "expert_bias is not in the checkpoint"

# Hugging Face: one rank's step 5 as a Llama4ForCausalLM folder (titan_checkpoint to-hf) loads
# into the debugmodel flavor with the same step-1 loss as the native checkpoint (forced balance: HF
# has no balancing bias); the trainer's own HF save is a folder transformers loads.
./scripts/build.sh titan_checkpoint_tool >/dev/null
"${TITAN_BUILD_DIR:-$ROOT/build}/titan_checkpoint" to-hf "$WORK/one_forced/checkpoint/step-5" "$WORK/l4_hf" >/dev/null
for from in native hf; do
  path="$WORK/one_forced/checkpoint/step-5"; hf=(); [[ $from == hf ]] && path="$WORK/l4_hf" && hf=(--checkpoint.initial_load_in_hf)
  train "$WORK/l4_$from.log" "${SMALL[@]}" --training.steps 1 --debug.moe_force_load_balance --checkpoint.enable \
    --checkpoint.initial_load_path "$path" --checkpoint.initial_load_model_only "${hf[@]}" --job.dump_folder "$WORK/l4_$from"
  [[ $RC -eq 0 ]] || { cat "$WORK/l4_$from.log"; fail "llama4 load from $from exited $RC"; }
done
[[ "$(losses "$WORK/l4_hf.log")" == "$(losses "$WORK/l4_native.log")" ]] || fail "HF and native step 5 give different losses"
train "$WORK/l4_save.log" "${SMALL[@]}" --training.steps 1 --checkpoint.enable --checkpoint.last_save_model_only \
  --checkpoint.last_save_in_hf --job.dump_folder "$WORK/l4_save"
[[ $RC -eq 0 ]] || { cat "$WORK/l4_save.log"; fail "llama4 HF save exited $RC"; }
"$TITAN_PYTHON" - "$WORK/l4_save/checkpoint/step-1" <<'PY' || fail "transformers cannot load our Llama 4 export"
import sys
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained(sys.argv[1])
assert type(m).__name__ == "Llama4ForCausalLM" and m.config.num_local_experts == 8, type(m)
print("transformers loads the export as", type(m).__name__)
PY

# FSDP shards the routed experts over their own group, efsdp = dp_shard * cp * tp / (ep * etp): on
# dim 0 (FSDP4 + EP2: efsdp 2 x ep 2 <= 8 experts), and on dim 1 where efsdp * ep outnumbers the
# experts (the same layout on a 2-layer, 2-expert variant, a config.json with from_hf); each equals
# one rank, and checkpoints move between one rank and FSDP over efsdp both ways (forced balance:
# from step 6 a routed run's near-ties may flip between layouts).
layout_run fsdp4_ep2_routed 4 5 $(degrees 1 4) $(ep_ 2 1) --training.local_batch_size 2
layout_run fsdp4_ep2_forced 4 7 $(degrees 1 4) $(ep_ 2 1) --training.local_batch_size 2 --debug.moe_force_load_balance
for balance in routed forced; do
  near "$WORK/one_$balance.metrics" "$WORK/fsdp4_ep2_$balance.metrics" || fail "fsdp4_ep2 ($balance) differs from one rank"
done
grep -q "each holding layers.1.moe.experts.w1 (2, 512, 256) of (8, 512, 256), FSDP over efsdp 2 on dim 0$" \
  "$WORK/fsdp4_ep2_routed.log" || fail "fsdp4_ep2 did not shard the experts over efsdp on dim 0"
layout_resume fsdp4_ep2_forced efsdp_to_one 1 7 one_forced --training.local_batch_size 8 --debug.moe_force_load_balance
layout_resume one_forced one_to_efsdp 4 7 one_forced $(degrees 1 4) $(ep_ 2 1) --training.local_batch_size 2 \
  --debug.moe_force_load_balance
mkdir -p "$WORK/l4_2e" && ln -s "$ROOT/tests/assets/tokenizer/tokenizer.model" "$WORK/l4_2e/"
"$TITAN_PYTHON" - "$WORK/l4_hf/config.json" "$WORK/l4_2e/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
t = c.get("text_config", c)
t.update(num_local_experts=2, num_hidden_layers=2, no_rope_layers=t["no_rope_layers"][:2])
if t.get("moe_layers") is not None: t["moe_layers"] = [1]
json.dump(c, open(sys.argv[2], "w"))
PY
two=(--model.flavor from_hf --model.hf_assets_path "$WORK/l4_2e")
make_seed seed_2e "${two[@]}"
export SEED_DIR="$WORK/seed_2e"
layout_run one_2e 1 7 "${two[@]}" --training.local_batch_size 8
layout_run fsdp4_ep2_2e 4 5 "${two[@]}" $(degrees 1 4) $(ep_ 2 1) --training.local_batch_size 2
near "$WORK/one_2e.metrics" "$WORK/fsdp4_ep2_2e.metrics" || fail "fsdp4_ep2 (2 experts) differs from one rank"
grep -q "each holding layers.1.moe.experts.w1 (1, 256, 256) of (2, 512, 256), FSDP over efsdp 2 on dim 1$" \
  "$WORK/fsdp4_ep2_2e.log" || fail "fsdp4_ep2 (2 experts) did not shard the experts over efsdp on dim 1"
layout_resume fsdp4_ep2_2e efsdp_dim1_to_one 1 7 one_2e "${two[@]}" --training.local_batch_size 8
unset SEED_DIR
# A Hugging Face export gathers the experts over efsdp (dim 1) and ep: the same tensors as one rank's.
hf_export hf_one_2e 1 "${two[@]}" --training.local_batch_size 8
hf_export hf_fsdp4_ep2_2e 4 "${two[@]}" $(degrees 1 4) $(ep_ 2 1) --training.local_batch_size 2
same_hf_export hf_one_2e hf_fsdp4_ep2_2e || fail "FSDP4 + EP2 exports other experts than one rank"

# Not built yet: one line each.
bad() {  # bad NGPU MESSAGE ARGS...
  local ngpu="$1" message="$2"; shift 2
  NGPU=$ngpu train "$WORK/bad.log" "${SMALL[@]}" --training.steps 1 --job.dump_folder "$WORK/bad" "$@"
  [[ $RC -ne 0 ]] && grep -qF "$message" "$WORK/bad.log" || { cat "$WORK/bad.log"; fail "no '$message'"; }
}
bad 3 "moe.num_experts (8) must be divisible by expert_parallel_degree (3)." $(degrees 1 3) $(ep_ 3 1)
bad 2 "parallelism.expert_tensor_parallel_degree must be 1 or tensor_parallel_degree (1), got 2" $(degrees 1 2) $(ep_ 2 2)
CONFIG_FILE=./configs/debug_model.toml bad 2 "parallelism.expert_parallel_degree 2 needs an MoE model (model.name llama4)" \
  $(degrees 1 2) $(ep_ 2 1)
bad 1 "model.flavor 'debugmodel_irope' (iRoPE" --model.flavor debugmodel_irope
echo "PASS"
