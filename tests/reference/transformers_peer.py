#!/usr/bin/env python3
"""The real Hugging Face `transformers` (from PyPI) as a peer of our HF folders, in fp32 on the CPU.

  transformers_peer.py logits DIR OUT.safetensors
      Loads DIR with AutoModelForCausalLM (the class config.json names) and writes (2, 24) random
      tokens as OUT's "tokens" (int64) and the model's logits for them as "logits" (B, T, V).
  transformers_peer.py save DIR CONFIG.json OUT.safetensors
      Builds the model that CONFIG.json (a transformers config) describes, with random weights
      large enough to make attention sharp and every weight matter, saves it with save_pretrained
      into DIR, and writes its logits for TOKENS as OUT's "logits".
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.utils import logging


def tokens_and_logits(model):
    tokens = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return {"tokens": tokens, "logits": model(input_ids=tokens).logits.float().contiguous()}


def randomize(model):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))  # sharp attention: RoPE layout errors show
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def main():
    torch.manual_seed(0)
    logging.disable_progress_bar()
    if sys.argv[1] == "logits":
        folder, out = sys.argv[2:4]
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        save_file(tokens_and_logits(model), out)
    elif sys.argv[1] == "save":
        folder, config_path, out = sys.argv[2:5]
        with open(config_path) as f:
            config = json.load(f)
        model_type = config.pop("model_type")
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config), dtype=torch.float32).eval()
        randomize(model)
        model.save_pretrained(folder)
        save_file(tokens_and_logits(model), out)
    else:
        sys.exit(f"unknown command {sys.argv[1]} (valid: logits, save)")


if __name__ == "__main__":
    main()
