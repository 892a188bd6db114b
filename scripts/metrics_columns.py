"""Prints "step loss grad_norm" for each line of a run's metrics.jsonl, at full precision."""
import json
import sys

for line in open(sys.argv[1]):
    m = json.loads(line)
    print(m["step"], repr(m["loss"]), repr(m["grad_norm"]))
