"""GEMM microbenchmarks: `linear(x[m,k], W[n,k])`, one kernel, per device.

The (n, k) are the per-device shapes of every `gemm` op in the chosen models' layer
plans (`sim.arith.ops.layer_plan`) at the chosen TP degrees, the LM head
(vocab-parallel) included; m runs over the grid's token counts.

Assumptions: nn.Linear's weight layout, which frameworks use (on CPUs it runs up to 2x
slower than `x @ w[k,n]` at small m). The weights are read from memory (calls cycle
through copies that outgrow the last-level cache, see `sim.calibrate.timing.cold`), as
in a forward pass through many layers; the activations stay cached.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from sim.arith.ops import layer_plan
from sim.calibrate.grids import Run
from sim.calibrate.timing import cold, cycle, randn, timing, try_point
from sim.spec.profile import GemmPoint


def gemm_shapes(run: Run) -> list[tuple[int, int]]:
    """Distinct per-device (n, k) of the `gemm` ops of every model at every TP degree,
    the LM head (vocab-parallel) included."""
    shapes: set[tuple[int, int]] = set()
    for model in run.models:
        for tp in run.tps[model.name]:
            for op in layer_plan(model, tp).ops:
                if op.kind == "gemm":
                    shapes.add((op.n, op.k))
            if not model.encoder_only:
                shapes.add((-(-model.vocab_size // tp), model.d_model))
    return sorted(shapes)


def _gemm_fn(run: Run, m: int, weights: list[tuple[torch.Tensor, ...]]) -> Callable[[], object]:
    x = randn((m, weights[0][0].shape[1]), run)
    nxt = cycle(weights)
    return lambda: torch.nn.functional.linear(x, nxt()[0])


def measure_gemms(run: Run, skipped: list[str]) -> list[GemmPoint]:
    """linear(x[m,k], W[n,k]): the weight layout of nn.Linear, which frameworks use (on
    CPUs it runs up to 2x slower than x @ w[k,n] at small m); the activations stay
    cached, the weights come from memory."""
    points = []
    for n, k in gemm_shapes(run):
        weights = cold(run, (randn((n, k), run),))
        for m in run.grid.gemm_m:
            build = partial(_gemm_fn, run, m, weights)
            stats = try_point(run, skipped, f"gemm {m}x{n}x{k}", build)
            if stats is not None:
                points.append(GemmPoint(m=m, n=n, k=k, **timing(stats)))
        del weights
    return points
