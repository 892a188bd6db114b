#!/usr/bin/env python3
"""Each pipeline schedule's per-rank compute order, as PyTorch 2.11's own generators make it
(torch.distributed.pipelining.schedules, run on stand-in stages: no model, no process group), for
the C++ generators to be compared with. Bubbles are dropped (a rank runs its list in order); a
DualPipeV OVERLAP_F_B (a;b) is its two actions, a then b. A combination PyTorch refuses records its
ValueError. ScheduleGPipe's IR comes from _get_pipeline_order; Schedule1F1B's is left out, because
that IR skips microbatch 0 on the last rank (the tests use PARALLELISM.md's table instead).

Usage: .venv/bin/python tests/reference/pipeline_schedules.py > tests/assets/reference/pipeline_orders.json
"""
import json

import torch
from torch.distributed.pipelining import schedules as S
from torch.distributed.pipelining.stage import _PipelineStageBase


class Stage(_PipelineStageBase):
    """Only what the generators read: the stage's index, the stage count and the pp group."""

    def __init__(self, stage_index, num_stages, group_size, group_rank):
        self.stage_index, self.num_stages = stage_index, num_stages
        self.group_size, self.group_rank = group_size, group_rank
        self.submod, self.stage_index_to_group_rank = None, {}

    def _create_grad_recv_info(self, *args, **kwargs):
        return tuple()

    def _prepare_forward_infra(self, *args, **kwargs):
        return tuple()

    def _prepare_backward_infra(self, *args, **kwargs):
        pass

    @property
    def has_backward(self):
        return True


def flatten(ops):
    out = []
    for a in ops:
        if a is None or a.computation_type == S._ComputationType.REDUCE_GRAD:
            continue
        out.extend(str(s) for s in a.sub_actions) if a.sub_actions else out.append(str(a))
    return " ".join(out)


MULTI = {"Interleaved1F1B": (S.ScheduleInterleaved1F1B, "loop"), "LoopedBFS": (S.ScheduleLoopedBFS, "loop"),
         "InterleavedZeroBubble": (S.ScheduleInterleavedZeroBubble, "loop"),
         "ZBVZeroBubble": (S.ScheduleZBVZeroBubble, "v"), "DualPipeV": (S.ScheduleDualPipeV, "v")}


def main():
    out = {"torch_version": torch.__version__, "orders": {}}
    for pp in (2, 4):
        for mb in (4, 8):
            sch = S.ScheduleGPipe(Stage(0, pp, pp, 0), mb, loss_fn=lambda o, t: o)
            out["orders"][f"GPipe pp{pp} stages{pp} mb{mb}"] = {str(r): flatten(o) for r, o in sch._get_pipeline_order().items()}
    for name, (cls, style) in MULTI.items():
        for pp, per_rank in ((2, 2), (4, 2), (2, 4)):
            if style == "v" and per_rank != 2:
                continue
            n = pp * per_rank
            first = (0, n - 1) if style == "v" else tuple(range(0, n, pp))  # rank 0's stages
            for mb in (4, 8):
                key = f"{name} pp{pp} stages{n} mb{mb}"
                try:
                    sch = cls([Stage(s, n, pp, 0) for s in first], mb, loss_fn=lambda o, t: o)
                    out["orders"][key] = {str(r): flatten(o) for r, o in sch.pipeline_order.items()}
                except ValueError as e:
                    out["orders"][key] = {"error": str(e)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
