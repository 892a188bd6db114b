#!/usr/bin/env python3
"""The eager-PyTorch opponent of the training benchmark: the same Llama 3 (TorchTitan layout and
init, from tests/reference/llama3_reference.py), AdamW, LR schedule, batch, sequence length, data
and thread count as titan_train, in idiomatic eager PyTorch 2.11 from the venv (the same libtorch
underneath): F.scaled_dot_product_attention (causal, GQA), nn.RMSNorm and AdamW(fused=True), as
TorchTitan writes them; with --compile, the model under torch.compile (inductor), as TorchTitan's
compile.enable. Prints one JSON line: tokens/s over the timed steps, peak RSS and the warm-up steps'
seconds (with --compile, mostly compilation: kept out of tokens/s); with --device cuda, the GPU's
peak reserved and allocated memory too (the model is then made and initialised on the GPU: same init formula,
CUDA random numbers).

--trace FILE writes a Chrome trace of the last step (torch.profiler), to set beside titan_train's.

Usage: eager_reference.py CONFIG_JSON TOKENS_NPY --batch B --seq T --steps N --warmup W --threads K
                          [--dtype D] [--compile] [--device cpu|cuda] [--trace FILE]
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import llama3_reference as ref  # noqa: E402


class SdpaAttention(ref.Attention):
    """The reference's projections and RoPE, with PyTorch's fused attention core."""

    def forward(self, x, freqs_cis):
        B, T, _ = x.shape
        q = ref.apply_rope(self.wq(x).view(B, T, self.h, self.hd), freqs_cis).transpose(1, 2)
        k = ref.apply_rope(self.wk(x).view(B, T, self.kv, self.hd), freqs_cis).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.h != self.kv)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


ref.Attention = SdpaAttention
ref.Norm = lambda dim, eps: torch.nn.RMSNorm(dim, eps=eps)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("tokens")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")  # as training.dtype
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--trace")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sync = torch.cuda.synchronize if a.device == "cuda" else lambda: None  # GPU work is asynchronous: time what finished
    hf = json.load(open(a.config))
    c = dict(dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
             n_kv_heads=hf["num_key_value_heads"], vocab_size=hf["vocab_size"], multiple_of=1, norm_eps=hf["rms_norm_eps"],
             rope_theta=hf["rope_theta"], seq_len=a.seq)
    ref.ffn_hidden = lambda dim, multiple_of: hf["intermediate_size"]  # the config's FFN size, as titan_train reads it
    device = torch.device(a.device)
    with device:
        model = ref.Llama(c)
        model.init_weights(0)
    if hf.get("tie_word_embeddings"):  # one matrix for input and output, as titan_train reads the config
        model.output.weight = model.tok_embeddings.weight
    model.to(getattr(torch, a.dtype))  # bfloat16: weights, gradients and AdamW state in bf16, as titan_train
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=8e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2))
    data = np.load(a.tokens).astype(np.int64)
    window = a.seq + 1
    pos = 0
    timed_tokens, t0 = 0, None
    start = time.perf_counter()
    for step in range(1, a.steps + 1):
        if step == a.warmup + 1:
            sync()
            t0 = time.perf_counter()
        rows = []
        for _ in range(a.batch):
            rows.append(data[pos:pos + window])
            pos += window
        batch = torch.from_numpy(np.stack(rows)).to(device)
        if a.trace and step == a.steps:
            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
            profiler = torch.profiler.profile(activities=activities)
            profiler.start()
        opt.zero_grad(set_to_none=True)
        logits = step_model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum") / batch[:, 1:].numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step > a.warmup:
            timed_tokens += batch[:, 1:].numel()
        if a.trace and step == a.steps:
            sync()
            profiler.stop()
            profiler.export_chrome_trace(a.trace)
    sync()
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result = {"tps": timed_tokens / seconds, "peak_rss_gib": rss / 2**30, "warmup_s": t0 - start, "last_loss": loss.item()}
    if device.type == "cuda":
        result["peak_cuda_gib"] = torch.cuda.max_memory_reserved() / 2**30  # what titan_train (and TorchTitan) report
        result["peak_cuda_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(result))


if __name__ == "__main__":
    main()
