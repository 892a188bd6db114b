#!/usr/bin/env python3
"""Reference numbers for the MoE (Llama 4) unit tests, from an independent eager-PyTorch MoE layer.

Written from the math of TorchTitan's MoE layer, without its sorting and grouping: the router scores
every expert in fp32 (sigmoid, or softmax over the experts), the top k of score + expert_bias choose,
the gates are the scores without the bias (optionally normalised, then scaled); every expert runs
on every token and a mask keeps the chosen ones (input scaled by the gate before the expert, or
the output after it); the shared expert adds to every token. Before each optimizer step the bias
moves by coeff * (sign(mean - n) - mean(sign(mean - n))) from the tokens n each expert received.
The rest of the model is llama3_reference.py's, with an MoE layer in every 2nd block.

Usage: .venv/bin/python tests/reference/llama4_reference.py > tests/assets/reference/llama4_tiny.json
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

import llama3_reference as l3

CFG = dict(l3.CFG, n_layers=2, interleave_moe_layer_step=2, num_experts=4, top_k=2, num_shared_experts=1,
           load_balance_coeff=0.05)
MOE_VARIANTS = {
    "sigmoid_score_before": dict(score_func="sigmoid", route_norm=False, route_scale=1.0, score_before_experts=True),
    "softmax_norm_score_after": dict(score_func="softmax", route_norm=True, route_scale=2.0, score_before_experts=False),
}


def moe_hidden(c):
    h = int(2 * 4 * c["dim"] / 3) // (c["top_k"] + c["num_shared_experts"])
    return c["multiple_of"] * ((h + c["multiple_of"] - 1) // c["multiple_of"])


def swiglu(x, w1, w2, w3):
    return F.silu(x @ w1.t()) @ w2.t() if w3 is None else (F.silu(x @ w1.t()) * (x @ w3.t())) @ w2.t()


class MoE(nn.Module):
    def __init__(self, c, v):
        super().__init__()
        self.c, self.v = c, v
        E, D, H = c["num_experts"], c["dim"], moe_hidden(c)
        self.experts = nn.Module()
        self.experts.w1 = nn.Parameter(torch.empty(E, H, D))
        self.experts.w2 = nn.Parameter(torch.empty(E, D, H))
        self.experts.w3 = nn.Parameter(torch.empty(E, H, D))
        self.router = nn.Module()
        self.router.gate = nn.Linear(D, E, bias=False)
        self.shared_experts = nn.Module()
        self.shared_experts.w1 = nn.Linear(D, H, bias=False)
        self.shared_experts.w2 = nn.Linear(H, D, bias=False)
        self.shared_experts.w3 = nn.Linear(D, H, bias=False)
        self.register_buffer("expert_bias", torch.zeros(E))
        self.tokens_per_expert = torch.zeros(E)

    def forward(self, x):
        B, T, D = x.shape
        E, k, v = self.c["num_experts"], self.c["top_k"], self.v
        x = x.reshape(-1, D)
        logits = self.router.gate(x).float()
        scores = torch.sigmoid(logits) if v["score_func"] == "sigmoid" else torch.softmax(logits, dim=-1)
        chosen = torch.topk(scores + self.expert_bias, k, dim=-1).indices  # (N, k)
        gates = scores.gather(1, chosen)
        if v["route_norm"]:
            gates = gates / (gates.sum(-1, keepdim=True) + 1e-20)
        gates = gates * v["route_scale"]
        self.tokens_per_expert += F.one_hot(chosen.flatten(), E).sum(0).float()
        out = torch.zeros_like(x)
        for slot in range(k):
            for e in range(E):
                mask = (chosen[:, slot] == e).unsqueeze(1).to(x.dtype)
                w = (self.experts.w1[e], self.experts.w2[e], self.experts.w3[e])
                g = gates[:, slot : slot + 1]
                y = swiglu(x * g, *w) if v["score_before_experts"] else g * swiglu(x, *w)
                out = out + mask * y
        s = self.shared_experts
        return (swiglu(x, s.w1.weight, s.w2.weight, s.w3.weight) + out).view(B, T, D)

    def update_bias(self):
        n = self.tokens_per_expert
        delta = self.c["load_balance_coeff"] * torch.sign(n.mean() - n)
        with torch.no_grad():
            self.expert_bias += delta - delta.mean()
        self.tokens_per_expert = torch.zeros_like(n)


class Llama4(l3.Llama):
    # TorchTitan's MoE init: the router's gate and the experts' w2/w3 depth-scaled like wo, w1 std 0.02
    SCALED = l3.Llama.SCALED + ("experts.w2", "experts.w3", "shared_experts.w2.weight", "shared_experts.w3.weight",
                                "router.gate.weight")

    def __init__(self, c, v):
        super().__init__(c)
        for i, block in enumerate(self.layers):
            if (i + 1) % c["interleave_moe_layer_step"] == 0:
                del block.feed_forward
                block.moe = MoE(c, v)
                block.forward = self._moe_block_forward(block)

    @staticmethod
    def _moe_block_forward(block):
        def forward(x, freqs_cis):
            h = x + block.attention(block.attention_norm(x), freqs_cis)
            return h + block.moe(block.ffn_norm(h))
        return forward

    def moe_layers(self):
        return [b.moe for b in self.layers if hasattr(b, "moe")]


def mean_loss(model, tokens):
    logits = model(tokens[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="sum") / tokens[:, 1:].numel()


def main():
    c = CFG
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(c["data_seed"])
    batches = [torch.randint(0, c["vocab_size"], (c["batch"], c["seq_len"] + 1), generator=gen) for _ in range(c["steps"])]
    out = {"config": c, "variants": MOE_VARIANTS, "torch_version": torch.__version__,
           "tokens": [b.tolist() for b in batches]}
    for name, v in MOE_VARIANTS.items():
        model = Llama4(c, v)
        model.init_weights(c["seed"])
        params = dict(model.named_parameters())
        if name == "sigmoid_score_before":
            out["init"] = {n: {"sum": p.double().sum().item(), "first": p.flatten()[:4].tolist()} for n, p in params.items()}
        loss = mean_loss(model, batches[0])
        loss.backward()
        first = {"loss": loss.item(), "grad_norms": {n: p.grad.norm().item() for n, p in params.items()},
                 "tokens_per_expert": [m.tokens_per_expert.tolist() for m in model.moe_layers()]}
        model.zero_grad(set_to_none=True)
        for m in model.moe_layers():
            m.tokens_per_expert.zero_()
        opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"],
                                weight_decay=c["weight_decay"], foreach=False)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: l3.lr_factor(s, c))
        steps = []
        for tokens in batches:
            opt.zero_grad(set_to_none=True)
            loss = mean_loss(model, tokens)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c["max_norm"])
            for m in model.moe_layers():  # TorchTitan's optimizer pre-step hook
                m.update_bias()
            opt.step()
            sched.step()
            steps.append({"loss": loss.item(), "grad_norm": norm.item(),
                          "expert_bias": [m.expert_bias.tolist() for m in model.moe_layers()]})
        out[name] = {"first_step": first, "train": steps}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
