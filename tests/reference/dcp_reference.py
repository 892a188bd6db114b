#!/usr/bin/env python3
"""PyTorch Distributed Checkpoint (DCP) peer for the DCP interop tests, on the venv's torch 2.11.

  save OUT_DIR single|fsdp2|tp
      A random tiny Llama 3 (tests/reference/llama3_reference.py, TorchTitan's parameter names)
      saved with torch.distributed.checkpoint.save into OUT_DIR/step-1, from one process, from
      two gloo processes with FSDP2 (fully_shard per block and at the root: DTensor shards, the
      vocabulary split unevenly), or from two with TorchTitan's tensor-parallel plan (column-wise
      wq/wk/wv/w1/w3/output, row-wise wo/w2 and the embedding: DTensor shards on dim 0 and 1). Also writes OUT_DIR/config.json (the model, for
      --model.flavor from_hf), OUT_DIR/tokens.npy and OUT_DIR/weights.safetensors (the same
      tensors, for the unit tests); prints {"loss", "seq_len"}: the loss of those weights on those tokens.
  compare EXPORT_DIR REFERENCE_DIR 1|2
      dcp.load of EXPORT_DIR (written by titan_checkpoint to-dcp) on one process, or on two gloo
      processes into FSDP2-sharded tensors, must give REFERENCE_DIR's model tensors bit for bit.
  to-torch-save DCP_DIR OUT.pt
      torch.distributed.checkpoint.format_utils.dcp_to_torch_save.
  resume EXPORT_DIR FIXTURE_DIR
      TorchTitan's resume of a full checkpoint, on one process: the state dict it builds (the model's
      tensors, the optimizer's flattened by get_optimizer_state_dict, LambdaLR's, train_state), loaded
      by dcp.load with its strict default planner (every key must be in EXPORT_DIR), then
      set_optimizer_state_dict and the scheduler's load_state_dict; then two steps on the fixture's
      tokens as TorchTitan's trainer takes them (loss, backward, clip to 1.0, AdamW, scheduler).
      Prints {"step", "lr", "initial_lr", "losses"}: the losses of those two steps.
"""
import json
import os
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama3_reference import Llama, ffn_hidden  # noqa: E402

# vocab_size 101 splits unevenly over two ranks (51 + 50 rows), as FSDP2 pads it.
CFG = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=101, multiple_of=16, norm_eps=1e-5,
           rope_theta=500000.0, seq_len=32)


def build(seed):
    torch.manual_seed(seed)
    model = Llama(CFG)
    model.init_weights(seed)
    with torch.no_grad():  # norms away from 1, so a norm read into the wrong place shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(fn, *args):
    port = free_port()
    mp.spawn(fn, args=(port, *args), nprocs=2, join=True)


def init(rank, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)


def finish():
    dist.barrier()  # a rank that leaves early closes connections its peer may still be using
    dist.destroy_process_group()
    # Its work done, the rank skips interpreter teardown, where gloo's threads were seen to abort
    # now and then on a loaded machine ("terminate called without an active exception").
    os._exit(0)


def sharded(model):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh("cpu", (2,))
    for block in model.layers:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def fsdp2_save(rank, port, out, weights):
    init(rank, port)
    model = Llama(CFG)
    model.load_state_dict(weights)
    state = sharded(model).state_dict()  # DTensors: each rank saves its shard
    assert all(type(v).__name__ == "DTensor" for v in state.values())
    dcp.save(state, checkpoint_id=out)
    finish()


def tp_save(rank, port, out, weights):
    init(rank, port)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    model = Llama(CFG)
    model.load_state_dict(weights)
    plan = {"tok_embeddings": RowwiseParallel(), "output": ColwiseParallel()}
    for i in range(CFG["n_layers"]):
        for name in ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3"):
            plan[f"layers.{i}.{name}"] = ColwiseParallel()
        for name in ("attention.wo", "feed_forward.w2"):
            plan[f"layers.{i}.{name}"] = RowwiseParallel()
    parallelize_module(model, init_device_mesh("cpu", (2,)), plan)
    state = model.state_dict()
    placements = {str(v.placements[0]) for v in state.values() if type(v).__name__ == "DTensor"}
    assert placements == {"S(0)", "S(1)"}, placements
    dcp.save(state, checkpoint_id=out)
    finish()


def save(out, mode):
    os.makedirs(out, exist_ok=True)
    model = build(1234)
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, CFG["vocab_size"], (1, CFG["seq_len"] + 1), generator=g)
    with torch.no_grad():
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[0, 1:])
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    step_dir = os.path.join(out, "step-1")
    if mode == "single":
        dcp.save(weights, checkpoint_id=step_dir)
    else:
        run_two(fsdp2_save if mode == "fsdp2" else tp_save, step_dir, weights)
    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=CFG["dim"],
                  num_hidden_layers=CFG["n_layers"], num_attention_heads=CFG["n_heads"],
                  num_key_value_heads=CFG["n_kv_heads"], intermediate_size=ffn_hidden(CFG["dim"], CFG["multiple_of"]),
                  vocab_size=CFG["vocab_size"], rope_theta=CFG["rope_theta"], rms_norm_eps=CFG["norm_eps"],
                  max_position_embeddings=CFG["seq_len"], tie_word_embeddings=False,
                  head_dim=CFG["dim"] // CFG["n_heads"], torch_dtype="float32", hidden_act="silu",
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                    original_max_position_embeddings=8192))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    np.save(os.path.join(out, "tokens.npy"), tokens[0].numpy().astype(np.int32))
    save_file(weights, os.path.join(out, "weights.safetensors"))
    print(json.dumps({"loss": loss.item(), "seq_len": CFG["seq_len"]}))


def reference_tensors(ref_dir):
    """The reference folder's model tensors, read by DCP itself on one process."""
    meta = dcp.FileSystemReader(ref_dir).read_metadata()
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.state_dict_metadata.items()}
    dcp.load(state, checkpoint_id=ref_dir)
    return state


def check(loaded, reference, where):
    assert set(loaded) == set(reference), f"{where}: keys differ: {sorted(set(loaded) ^ set(reference))}"
    for k, v in loaded.items():
        assert v.dtype == reference[k].dtype and torch.equal(v, reference[k]), f"{where}: {k} differs"


def compare_two(rank, port, export_dir, reference):
    init(rank, port)
    model = sharded(Llama(CFG))
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}  # DTensor shards
    dcp.load(state, checkpoint_id=export_dir)
    check({k: v.full_tensor() for k, v in state.items()}, reference, f"rank {rank}")
    finish()


def compare(export_dir, ref_dir, processes):
    reference = reference_tensors(ref_dir)
    if processes == 1:
        meta = dcp.FileSystemReader(export_dir).read_metadata()
        state = {k: torch.zeros_like(reference[k]) for k in reference}
        dcp.load(state, checkpoint_id=export_dir)
        check(state, reference, "one process")
        print(f"dcp.load of {export_dir}: {len(state)} tensors equal ({len(meta.state_dict_metadata)} keys in all)")
    else:
        run_two(compare_two, export_dir, reference)
        print(f"dcp.load of {export_dir} on two FSDP2 ranks: {len(reference)} tensors equal")


def resume(export_dir, fixture_dir):
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                         set_optimizer_state_dict)
    model = build(0)  # every value below is replaced by the checkpoint's
    opt = torch.optim.AdamW(model.parameters(), lr=1.0, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    options = StateDictOptions(flatten_optimizer_state_dict=True)
    state = dict(model.state_dict())
    state["optimizer"] = get_optimizer_state_dict(model, opt, options=options)
    state["lr_scheduler"] = sched.state_dict()
    state["train_state"] = {"step": 0, "ntokens_seen": 0}
    dcp.load(state, checkpoint_id=export_dir)
    model.load_state_dict({k: v for k, v in state.items() if k not in ("optimizer", "lr_scheduler", "train_state")})
    set_optimizer_state_dict(model, opt, state["optimizer"], options=options)
    sched.load_state_dict(state["lr_scheduler"])
    group = opt.param_groups[0]
    lr, initial_lr = group["lr"], group["initial_lr"]
    tokens = torch.from_numpy(np.load(os.path.join(fixture_dir, "tokens.npy")).astype(np.int64))[None]
    losses = []
    for _ in range(2):
        opt.zero_grad()
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[0, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    print(json.dumps({"step": int(state["train_state"]["step"]), "lr": lr, "initial_lr": initial_lr, "losses": losses}))


def main():
    cmd = sys.argv[1]
    if cmd == "save":
        save(sys.argv[2], sys.argv[3])
    elif cmd == "compare":
        compare(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif cmd == "resume":
        resume(sys.argv[2], sys.argv[3])
    elif cmd == "to-torch-save":
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
        dcp_to_torch_save(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
