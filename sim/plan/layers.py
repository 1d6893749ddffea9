"""How a replica's layers are split over its pipeline stages, and how attention is split
over a TP group.

Layers per stage are given (`parallel.layers_per_stage`), as even as possible, or
balanced by cost: the first stage also runs the embedding and the last the LM head, so
with `layer_split: balanced` they take fewer layers, chosen to minimise the slowest
stage of a reference decode step (64 sequences at 1,024 tokens of context).
"""

from __future__ import annotations

import math

from sim.arith.memory import layers_per_stage
from sim.arith.ops import Work, layer_plan
from sim.cost.layouts import compute_attention
from sim.cost.roofline import OpKernel
from sim.cost.stage import StageCost
from sim.spec.scenario import Scenario


def plan_attention(s: Scenario) -> str:
    """How the compute plan and the KV cache split attention (see `compute_attention`):
    the one answer every sizing and pricing of a replica uses."""
    par = s.parallel
    return compute_attention(par.tp_layout, s.model, par.tp, par.attention)


def stage_layers(s: Scenario, kernel: OpKernel | None = None) -> list[int]:
    """Layers per pipeline stage: given, even, or balanced by cost (the first stage also
    runs the embedding and the last the LM head, so they take fewer layers)."""
    model, par = s.model, s.parallel
    if par.layers_per_stage is not None:
        return list(par.layers_per_stage)
    even = layers_per_stage(model.n_layers, par.pp)
    if par.pipeline.layer_split == "even" or par.pp == 1 or kernel is None:
        return even
    # Balance a reference step: a decode of 64 sequences at 1024 tokens of context.
    plan = layer_plan(model, par.tp, kernel.precision, plan_attention(s))
    work = Work.decode(64, 1024)
    rt = s.runtime
    one = StageCost(plan, 1, kernel, None, first=False, last=False, runtime=rt).time(work, 0)
    first = StageCost(plan, 0, kernel, None, first=True, last=False, runtime=rt).time(work, 0)
    last = StageCost(plan, 0, kernel, None, first=False, last=True, runtime=rt).time(work, 64)
    return balance_layers(model.n_layers, par.pp, one, first, last)


def balance_layers(
    n_layers: int, pp: int, per_layer: float, first: float, last: float
) -> list[int]:
    """Split n_layers over pp stages (each ≥ 1) to minimise the slowest stage, where
    stage cost = layers · per_layer (+ first on stage 0, + last on the last stage)."""
    extra = [first if i == 0 else 0.0 for i in range(pp)]
    extra[-1] += last
    lo, hi = 0.0, n_layers * per_layer + first + last
    for _ in range(60):  # bisection on the slowest stage's cost
        mid = (lo + hi) / 2
        room = [
            max(1, math.floor((mid - e) / per_layer + 1e-9)) if per_layer > 0 else n_layers
            for e in extra
        ]
        if sum(room) >= n_layers and all((mid - e) >= per_layer for e in extra):
            hi = mid
        else:
            lo = mid
    room = [max(1, math.floor((hi - e) / per_layer + 1e-9)) for e in extra]
    split = [1] * pp  # fill the cheapest-to-extend stages up to their room
    left = n_layers - pp
    for i in sorted(range(pp), key=lambda i: extra[i]):
        take = min(left, room[i] - 1)
        split[i] += take
        left -= take
    split[0] += left  # only when the bisection met rounding at the boundary
    return split
