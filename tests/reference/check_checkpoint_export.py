#!/usr/bin/env python3
"""Checks a model-only checkpoint from Python: the step folder's safetensors file, read here with a
minimal independent safetensors parser and with the real safetensors package (the same tensors),
must hold exactly the model keys in the expected dtype,
and the single-file export (titan_checkpoint to-torch) must torch.load to the same tensors.

Usage: .venv/bin/python tests/reference/check_checkpoint_export.py STEP_DIR EXPORT.pt DTYPE(float32|bfloat16) N_LAYERS
"""
import json
import struct
import sys

import torch
from safetensors.torch import load_file

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64, "U8": torch.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=DTYPES[info["dtype"]]) if e > b else torch.empty(0)
        out[name] = t.reshape(info["shape"])
    return out


def main():
    step_dir, export, dtype, n_layers = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3]), int(sys.argv[4])
    saved = read_safetensors(step_dir + "/__0_0.safetensors")
    package = load_file(step_dir + "/__0_0.safetensors")
    assert package.keys() == saved.keys() and all(torch.equal(package[k], saved[k]) for k in saved), "safetensors package disagrees"
    expected = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    for i in range(n_layers):
        expected |= {f"layers.{i}.attention.{w}.weight" for w in ("wq", "wk", "wv", "wo")}
        expected |= {f"layers.{i}.feed_forward.{w}.weight" for w in ("w1", "w2", "w3")}
        expected |= {f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"}
    assert set(saved) == expected, f"keys differ: extra {set(saved) - expected}, missing {expected - set(saved)}"
    for name, t in saved.items():
        assert t.dtype == dtype, f"{name} is {t.dtype}, expected {dtype}"
    loaded = torch.load(export)
    assert set(loaded) == expected, "export keys differ from the checkpoint's"
    for name, t in loaded.items():
        assert t.dtype == dtype and torch.equal(t, saved[name]), f"{name} differs between export and checkpoint"
    print(f"ok: {len(saved)} model tensors in {dtype}, export identical")


if __name__ == "__main__":
    main()
