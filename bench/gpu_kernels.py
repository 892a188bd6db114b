#!/usr/bin/env python3
"""GPU kernel time of one training step, from Chrome traces (titan_train's profiler, torch.profiler),
side by side: total kernel time, the share of the step's span the GPU was busy, time by kind of
kernel (GEMM, attention, the rest) and the heaviest kernels of each. Names are shortened to 90 chars.

Usage: gpu_kernels.py NAME=TRACE.json [NAME=TRACE.json ...] [--top K]
"""
import argparse
import collections
import json
import re

KINDS = [("gemm", re.compile(r"gemm|nvjet|cutlass|sm90_xmma|cublas", re.I)),
         ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
         ("norm/loss", re.compile(r"norm|softmax|nll|cross_entropy|log_softmax", re.I)),  # the grad norm's foreach too
         ("optimizer", re.compile(r"adam|multi_tensor|foreach", re.I))]


def kind(name):
    return next((k for k, pattern in KINDS if pattern.search(name)), "elementwise/other")


def summarize(path):
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("cat") == "kernel" and "dur" in e]
    by_name = collections.Counter()
    count = collections.Counter()
    for e in events:
        by_name[e["name"]] += e["dur"]
        count[e["name"]] += 1
    busy = sum(by_name.values())
    span = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events) if events else 0
    kinds = collections.Counter()
    for name, us in by_name.items():
        kinds[kind(name)] += us
    return dict(busy=busy, span=span, n=len(events), kinds=kinds, by_name=by_name, count=count)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("traces", nargs="+")
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    for item in a.traces:
        name, path = item.split("=", 1)
        s = summarize(path)
        print(f"{name}: {s['n']} kernels, {s['busy'] / 1e3:.1f} ms of kernels in a {s['span'] / 1e3:.1f} ms span "
              f"({100 * s['busy'] / max(s['span'], 1):.0f}% busy)")
        print("   by kind: " + ", ".join(f"{k} {us / 1e3:.1f} ms" for k, us in s["kinds"].most_common()))
        for kernel, us in s["by_name"].most_common(a.top):
            print(f"   {us / 1e3:8.2f} ms {s['count'][kernel]:5d}x  {kernel[:90]}")


if __name__ == "__main__":
    main()
