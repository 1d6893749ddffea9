"""Launch overhead and copies between host and device memory.

Launch overhead: a one-element in-place add, issued back to back, per call. Copies:
between pinned host memory and the device, both ways, over the grid's sizes; on a CPU,
a memcpy between two host tensors, recorded as h2d.

Assumptions: the launch cost of a forward pass is that of the smallest kernel issued
back to back (eager dispatch + launch, no CUDA graphs); host buffers are pinned, as
serving engines keep them (pageable copies are slower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from sim.calibrate.grids import Run
from sim.calibrate.timing import measure, timing
from sim.spec.profile import CopyPoint


def measure_launch(run: Run) -> float:
    """Seconds per tiny kernel issued back to back: the eager dispatch + launch cost."""
    a = torch.zeros(1, device=run.device)
    g = run.grid
    median, _, _ = measure(
        lambda: a.add_(1.0), run.device, warmup=10 * g.warmup, repeats=g.repeats, calls=200
    )
    return median


def _copy_fn(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], object]:
    return lambda: dst.copy_(src, non_blocking=True)


def measure_copies(run: Run, skipped: list[str]) -> list[CopyPoint]:
    """Pinned host <-> device copies; on CPU one memcpy between two tensors, as h2d."""
    sizes = run.grid.copy_bytes
    biggest = max(sizes)
    g = run.grid
    points = []
    try:
        if run.is_cuda:
            host = torch.empty(biggest, dtype=torch.uint8, pin_memory=True)
            dev = torch.empty(biggest, dtype=torch.uint8, device=run.device)
        else:
            host = torch.empty(biggest, dtype=torch.uint8)
            dev = torch.empty(biggest, dtype=torch.uint8)
    except (torch.cuda.OutOfMemoryError, RuntimeError):
        skipped.append(f"copies of {biggest} bytes")
        return []
    host.fill_(1)
    dev.fill_(2)
    for size in sizes:
        h, d = host[:size], dev[:size]
        ways: list[tuple[Literal["h2d", "d2h"], Callable[[], object]]] = [("h2d", _copy_fn(d, h))]
        if run.is_cuda:
            ways.append(("d2h", _copy_fn(h, d)))
        for direction, fn in ways:
            stats = measure(
                fn,
                run.device,
                warmup=g.warmup,
                repeats=g.repeats,
                sample_s=g.sample_s,
                max_calls=g.max_calls,
            )
            points.append(CopyPoint(direction=direction, bytes=size, **timing(stats)))
    return points
