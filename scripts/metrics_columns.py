"""Prints "step loss grad_norm" for each training line of a run's metrics.jsonl, at full precision;
with --validation, "step validation_loss" for each validation line instead."""
import json
import sys

validation = "--validation" in sys.argv[1:]
path = [a for a in sys.argv[1:] if a != "--validation"][0]
for line in open(path):
    m = json.loads(line)
    if validation and "validation_loss" in m:
        print(m["step"], repr(m["validation_loss"]))
    elif not validation and "loss" in m:
        print(m["step"], repr(m["loss"]), repr(m["grad_norm"]))
