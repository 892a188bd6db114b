#!/usr/bin/env python3
"""Tiny Hugging Face Llama checkpoints and their reference losses, for the HF interop tests.

An independent implementation of Hugging Face's LlamaForCausalLM forward pass (transformers is not
installable here): rotate_half RoPE with the "llama3" rope_scaling of modeling_rope_utils, repeat_kv
GQA, LlamaRMSNorm (fp32 normalise, cast, then scale), SiLU MLP, tied or untied lm_head, and the
shifted-label mean cross-entropy of LlamaForCausalLM. Weights are written as HF writes them
(config.json, safetensors with a sharded index or a single file) with a minimal safetensors writer.

Usage: .venv/bin/python tests/reference/hf_llama_reference.py OUT_DIR VARIANT   (VARIANT: scaled | tied | sharded)
Prints {"loss", "loss_without_permutation" (a RoPE-layout bug's loss), "seq_len"} and writes OUT_DIR/{config.json, *.safetensors, tokens.npy}.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

VARIANTS = {
    # Llama 3.1 style: llama3 rope scaling, GQA, untied, sharp attention (large q/k weights).
    "scaled": dict(tie=False, scaling=True, qk_scale=15.0, shards=1),
    # Llama 3.2 style tied embeddings, Llama 3.0 style (no rope_scaling).
    "tied": dict(tie=True, scaling=False, qk_scale=12.0, shards=1),
    # As "scaled", saved as two files with model.safetensors.index.json.
    "sharded": dict(tie=False, scaling=True, qk_scale=15.0, shards=2),
}
DIM, LAYERS, HEADS, KV_HEADS, HIDDEN, VOCAB, SEQ = 64, 2, 4, 2, 160, 96, 48
THETA, EPS = 500000.0, 1e-5
# With head_dim 16 and theta 5e5 the bands cross 2048..8192 only for long wavelengths: a small
# original context makes every branch of the llama3 scaling (kept, interpolated, divided) appear.
SCALING = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)


def llama3_inv_freq(head_dim, scaling):
    inv_freq = 1.0 / (THETA ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling:
        return inv_freq
    factor, low, high, old = (SCALING["factor"], SCALING["low_freq_factor"], SCALING["high_freq_factor"],
                              SCALING["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, inv_freq_llama)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w):
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype)


def rotate_interleaved(x, freqs):  # what HF weights see when the q/k permutation is forgotten
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * torch.polar(torch.ones_like(freqs), freqs)[None, None]).flatten(3)


def forward(w, tokens, tie, scaling, forget_permutation=False):
    hd = DIM // HEADS
    T = tokens.shape[1]
    inv_freq = llama3_inv_freq(hd, scaling)
    freqs = torch.outer(torch.arange(T).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    h = w["model.embed_tokens.weight"][tokens]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"])
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(1, T, HEADS, hd).transpose(1, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(1, T, KV_HEADS, hd).transpose(1, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(1, T, KV_HEADS, hd).transpose(1, 2)
        if forget_permutation:
            q, k = rotate_interleaved(q, freqs), rotate_interleaved(k, freqs)
        else:
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = HEADS // KV_HEADS  # repeat_kv: each kv head serves rep consecutive query heads
        k = k[:, :, None].expand(1, KV_HEADS, rep, T, hd).reshape(1, HEADS, T, hd)
        v = v[:, :, None].expand(1, KV_HEADS, rep, T, hd).reshape(1, HEADS, T, hd)
        att = torch.softmax((q @ k.transpose(2, 3)) / math.sqrt(hd) + mask, dim=-1, dtype=torch.float32)
        o = (att @ v).transpose(1, 2).reshape(1, T, DIM)
        h = h + o @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"])
        mlp = (F.silu(x @ w[p + "mlp.gate_proj.weight"].T) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        h = h + mlp
    h = rms_norm(h, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if tie else w["lm_head.weight"]
    return h @ head.T


def write_safetensors(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, t in tensors.items():
        b = t.contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def main():
    out, variant = sys.argv[1], sys.argv[2]
    v = VARIANTS[variant]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(11)
    rnd = lambda *shape, std: torch.randn(*shape, generator=g) * std
    w = {"model.embed_tokens.weight": rnd(VOCAB, DIM, std=0.3 if v["tie"] else 1.0)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rnd(HEADS * DIM // HEADS, DIM, std=0.02 * v["qk_scale"])
        w[p + "self_attn.k_proj.weight"] = rnd(KV_HEADS * DIM // HEADS, DIM, std=0.02 * v["qk_scale"])
        w[p + "self_attn.v_proj.weight"] = rnd(KV_HEADS * DIM // HEADS, DIM, std=0.05)
        w[p + "self_attn.o_proj.weight"] = rnd(DIM, DIM, std=0.05)
        w[p + "mlp.gate_proj.weight"] = rnd(HIDDEN, DIM, std=0.05)
        w[p + "mlp.up_proj.weight"] = rnd(HIDDEN, DIM, std=0.05)
        w[p + "mlp.down_proj.weight"] = rnd(DIM, HIDDEN, std=0.05)
        w[p + "input_layernorm.weight"] = 1 + rnd(DIM, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1 + rnd(DIM, std=0.1)
        w[p + "self_attn.rotary_emb.inv_freq"] = llama3_inv_freq(DIM // HEADS, v["scaling"])  # old files have it
    w["model.norm.weight"] = 1 + rnd(DIM, std=0.1)
    if not v["tie"]:
        w["lm_head.weight"] = rnd(VOCAB, DIM, std=0.05)
    tokens = torch.randint(0, VOCAB, (1, SEQ + 1), generator=g)

    logits = forward(w, tokens[:, :-1], v["tie"], v["scaling"])
    loss = F.cross_entropy(logits.view(-1, VOCAB).float(), tokens[0, 1:])
    wrong = forward(w, tokens[:, :-1], v["tie"], v["scaling"], forget_permutation=True)
    loss_wrong = F.cross_entropy(wrong.view(-1, VOCAB).float(), tokens[0, 1:])

    config = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=DIM, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, intermediate_size=HIDDEN, vocab_size=VOCAB,
                  rope_theta=THETA, rms_norm_eps=EPS, max_position_embeddings=2048, tie_word_embeddings=v["tie"],
                  head_dim=DIM // HEADS, torch_dtype="float32", hidden_act="silu",
                  rope_scaling=SCALING if v["scaling"] else None)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = list(w)
    if v["shards"] == 1:
        write_safetensors(os.path.join(out, "model.safetensors"), w)
    else:
        half = len(names) // 2
        parts = [names[:half], names[half:]]
        weight_map = {}
        for i, part in enumerate(parts):
            fname = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
            write_safetensors(os.path.join(out, fname), {n: w[n] for n in part})
            weight_map.update({n: fname for n in part})
        total = sum(t.numel() * 4 for t in w.values())
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    np.save(os.path.join(out, "tokens.npy"), tokens[0].numpy().astype(np.int32))
    print(json.dumps({"loss": loss.item(), "loss_without_permutation": loss_wrong.item(), "seq_len": SEQ}))


if __name__ == "__main__":
    main()
