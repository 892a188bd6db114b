#!/usr/bin/env python3
"""Reference numbers for the Llama 3 unit tests, from an independent eager-PyTorch implementation.

Written from the math (Meta's reference layout: complex RoPE on adjacent pairs with Llama 3.1
scaling, GQA by repeat_interleave, RMSNorm in fp32, SwiGLU), with torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_ and a LambdaLR warmup-stable-decay schedule. Runs on the venv's
torch 2.11 (the same libtorch as the C++ build): each parameter is initialised from a generator
seeded by (seed, FQN) as titan.cpp does, so the same seed gives the same weights.

Usage: .venv/bin/python tests/reference/llama3_reference.py > tests/assets/reference/llama3_tiny.json
"""
import json
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

CFG = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, norm_eps=1e-5,
           rope_theta=500000.0, seq_len=16, batch=2, seed=1234, data_seed=7, steps=4,
           lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, max_norm=1.0,
           warmup_steps=2, decay_ratio=0.5, min_lr_factor=0.1)


def wide(t):
    """fp32 for fp32 and lower precisions, float64 kept (the float64 run)."""
    return t if t.dtype == torch.float64 else t.float()


def ffn_hidden(dim, multiple_of):
    h = int(2 * 4 * dim / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def rope_freqs_cis(head_dim, end, theta):
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    factor, low, high, orig = 8.0, 1.0, 4.0, 8192
    out = []
    for f in freqs.tolist():  # per band, as in Meta's llama3 apply_scaling
        wavelen = 2 * math.pi / f
        if wavelen < orig / high:
            out.append(f)
        elif wavelen > orig / low:
            out.append(f / factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    freqs = torch.tensor(out, dtype=torch.float32)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # (end, head_dim/2) complex64


def apply_rope(x, freqs_cis):  # x: (B, T, H, hd)
    xc = torch.view_as_complex(wide(x).reshape(*x.shape[:-1], -1, 2))
    out = torch.view_as_real(xc * freqs_cis[: x.shape[1]].view(1, x.shape[1], 1, -1)).flatten(3)
    return out.type_as(x)


class Norm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # as torch.nn.RMSNorm (TorchTitan's): normalised and scaled in fp32
        xf = wide(x)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * wide(self.weight)).type_as(x)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.h, self.kv, self.hd = c["n_heads"], c["n_kv_heads"], c["dim"] // c["n_heads"]
        self.wq = nn.Linear(c["dim"], self.h * self.hd, bias=False)
        self.wk = nn.Linear(c["dim"], self.kv * self.hd, bias=False)
        self.wv = nn.Linear(c["dim"], self.kv * self.hd, bias=False)
        self.wo = nn.Linear(self.h * self.hd, c["dim"], bias=False)

    def forward(self, x, freqs_cis):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.h, self.hd), freqs_cis).transpose(1, 2)
        k = apply_rope(self.wk(x).view(B, T, self.kv, self.hd), freqs_cis).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        k = k.repeat_interleave(self.h // self.kv, dim=1)  # q head h reads kv head h // n_rep
        v = v.repeat_interleave(self.h // self.kv, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
        mask = torch.full((T, T), float("-inf"), dtype=scores.dtype).triu(1)
        out = torch.softmax(scores + mask, dim=-1) @ v
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        hidden = ffn_hidden(c["dim"], c["multiple_of"])
        self.attention = Attention(c)
        self.feed_forward = nn.Module()
        self.feed_forward.w1 = nn.Linear(c["dim"], hidden, bias=False)
        self.feed_forward.w2 = nn.Linear(hidden, c["dim"], bias=False)
        self.feed_forward.w3 = nn.Linear(c["dim"], hidden, bias=False)
        self.attention_norm = Norm(c["dim"], c["norm_eps"])
        self.ffn_norm = Norm(c["dim"], c["norm_eps"])

    def forward(self, x, freqs_cis):
        h = x + self.attention(self.attention_norm(x), freqs_cis)
        ff = self.feed_forward
        y = self.ffn_norm(h)
        return h + ff.w2(F.silu(ff.w1(y)) * ff.w3(y))


def parameter_seed(seed, fqn):
    """FNV-1a of the FQN mixed with the seed: each parameter's own generator, whatever the layout."""
    h = 14695981039346656037
    for b in fqn.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h ^ ((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)


def trunc_normal_(w, std, a, b, g):
    """nn.init.trunc_normal_ (mean 0) with its inverse CDF in float64, as titan.cpp: torch's fp32
    erfinv rounds differently on AVX2 and AVX-512 CPUs, float64 then rounded to fp32 does not."""
    cdf = lambda x: (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0
    lo, hi = cdf(a / std), cdf(b / std)
    with torch.no_grad():
        w.uniform_(2 * lo - 1, 2 * hi - 1, generator=g)
        w.copy_(w.double().erfinv_().mul_(std * math.sqrt(2.0)).add_(0.0).clamp_(a, b))


class Llama(nn.Module):
    SCALED = ("attention.wo.weight", "feed_forward.w2.weight", "feed_forward.w3.weight")  # std 0.02 / sqrt(2 (layer + 1))

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c["vocab_size"], c["dim"])
        self.layers = nn.ModuleList([Block(c) for _ in range(c["n_layers"])])
        self.norm = Norm(c["dim"], c["norm_eps"])
        self.output = nn.Linear(c["dim"], c["vocab_size"], bias=False)
        self.freqs_cis = rope_freqs_cis(c["dim"] // c["n_heads"], c["seq_len"], c["rope_theta"])

    def init_weights(self, seed):
        """TorchTitan's init (embedding N(0,1), trunc normals, depth-scaled wo/w2/w3, norms 1), each
        parameter from a generator seeded by (seed, its FQN)."""
        for name, w in self.named_parameters():
            g = torch.Generator(w.device).manual_seed(parameter_seed(seed, name))  # a CUDA model draws on the GPU
            if name == "tok_embeddings.weight":
                nn.init.normal_(w, generator=g)
            elif name.endswith("norm.weight"):
                nn.init.ones_(w)
            elif name == "output.weight":
                std = self.c["dim"] ** -0.5
                trunc_normal_(w, std, -3 * std, 3 * std, g)
            else:
                layer = int(name.split(".")[1])
                scaled = name.endswith(self.SCALED)
                std = 0.02 / (2 * (layer + 1)) ** 0.5 if scaled else 0.02
                trunc_normal_(w, std, -2.0, 2.0, g)

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, self.freqs_cis)
        return self.output(self.norm(h))


def lr_factor(s, c):
    total = c["steps"]
    warmup = c["warmup_steps"]
    decay = round(total * c["decay_ratio"])
    stable = total + 1 - warmup - decay
    if s < warmup:
        return (s + 1) / warmup
    if s < warmup + stable:
        return 1.0
    p = (s + 1 - warmup - stable) / decay
    return c["min_lr_factor"] + (1 - c["min_lr_factor"]) * (1 - p)


def train(model, batches, c):
    """AdamW + clip + LambdaLR, one batch per step: each step's loss and norm, the final parameters."""
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                            weight_decay=c["weight_decay"], foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, c))
    steps = []
    for tokens in batches:
        opt.zero_grad(set_to_none=True)
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(wide(logits.flatten(0, 1)), tokens[:, 1:].flatten(), reduction="sum") / tokens[:, 1:].numel()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c["max_norm"])
        opt.step()
        sched.step()
        steps.append({"loss": loss.item(), "grad_norm": norm.item()})
    final = {name: {"sum": p.double().sum().item(), "first": p.flatten()[:4].tolist()}
             for name, p in model.named_parameters()}
    return steps, final


def main():
    c = CFG
    torch.set_num_threads(1)
    model = Llama(c)
    model.init_weights(c["seed"])
    params = dict(model.named_parameters())

    gen = torch.Generator().manual_seed(c["data_seed"])
    batches = [torch.randint(0, c["vocab_size"], (c["batch"], c["seq_len"] + 1), generator=gen) for _ in range(c["steps"])]

    init = {name: {"sum": p.double().sum().item(), "sumsq": p.double().pow(2).sum().item(),
                   "first": p.flatten()[:4].tolist()} for name, p in params.items()}

    # Forward/backward on the first batch.
    tokens = batches[0]
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum") / tokens[:, 1:].numel()
    loss.backward()
    first = {"loss": loss.item(), "logits_sum": logits.double().sum().item(),
             "logits_first": logits[0, -1, :4].tolist(),
             "grad_norms": {name: p.grad.norm().item() for name, p in params.items()}}

    steps, final = train(model, batches, c)
    # The same run in float64: final parameters of steps that are ill-conditioned (Adam on a gradient
    # near zero) differ in fp32 by more than rounding order, so the test bounds ours by the fp32 run's own error.
    model64 = Llama(c)
    model64.init_weights(c["seed"])
    _, final64 = train(model64.double(), batches, c)
    for name in final:
        final[name]["first_float64"] = final64[name]["first"]

    json.dump({"config": c, "torch_version": torch.__version__, "tokens": [b.tolist() for b in batches],
               "init": init, "first_step": first, "train": steps, "final": final}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
