"""Sampling and timing of one kernel, and keeping its operands out of the cache.

A sample is a batch of back-to-back calls timed together (CUDA events on GPU,
`time.perf_counter` on CPU) divided by the count, after warm-up, so a kernel shorter
than its launch is timed at the launch rate, as it runs in a forward pass. A point keeps
the median, p10 and p90 of its samples; one that does not fit in device memory is
skipped and counted.

Assumptions: operands a forward pass reads from memory (GEMM weights, decode KV caches)
are cloned until the copies together outgrow the last-level cache (GPU L2, CPU L3)
COLD_FACTOR times over, and calls cycle through them, as a forward pass through many
layers does (twice over left a CPU's victim L3 serving a fifth of a GEMV's weight
reads that a model's forward pass, with its other layers in between, does not);
activations, produced just before they are used, stay cached. Operands are random
normal (zeros draw less power and run faster on recent GPUs).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from sim.calibrate.grids import MiB, Run

Stats = tuple[float, float, float]  # median, p10, p90 seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def elapsed_s(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds for `calls` back-to-back calls of `fn`, finished on the device."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    sample_s: float = 0.0,
    max_calls: int = 1,
    calls: int | None = None,
    budget_s: float | None = None,
) -> Stats:
    """Median, p10 and p90 seconds of one call of `fn` over `repeats` samples.

    Each sample times `calls` back-to-back calls (by default as many as fill `sample_s`,
    at most `max_calls`) and divides by their count. With `budget_s`, a call that takes
    long gets one warm-up and as many samples as fit in the budget (at least
    MIN_REPEATS; two, when the warm-up alone outlasted the budget): seconds-long calls
    (a bf16 GEMM on a CPU without bf16 units) would otherwise take minutes a point.
    """
    if budget_s is not None:
        first = elapsed_s(fn, device, 1)  # the first warm-up call, timed
        if first > budget_s:
            warmup, repeats = 1, 2
        elif first * warmup > budget_s:
            warmup = 1
            repeats = max(MIN_REPEATS, min(repeats, int(budget_s / first)))
        warmup -= 1
    for _ in range(warmup):
        fn()
    sync(device)
    if calls is None:
        one = elapsed_s(fn, device, 1)
        calls = int(min(max_calls, max(1.0, sample_s / max(one, 1e-9))))
    return stats([elapsed_s(fn, device, calls) / calls for _ in range(max(1, repeats))])


MIN_REPEATS = 3


def stats(samples: Sequence[float] | np.ndarray) -> Stats:
    """Median, p10 and p90 of per-call seconds."""
    p10, median, p90 = np.percentile(samples, [10, 50, 90])
    floor = 1e-12  # a timer that reads 0 still means "took some time"
    return max(float(median), floor), max(float(p10), floor), max(float(p90), floor)


def timing(stats: Stats) -> dict[str, float]:
    return {"median_s": stats[0], "p10_s": stats[1], "p90_s": stats[2]}


def try_point(
    run: Run, skipped: list[str], what: str, build: Callable[[], Callable[[], object]]
) -> Stats | None:
    """Build one kernel's operands and time it; a point that does not fit in device
    memory is skipped (and counted), the rest of the grid goes on."""
    g = run.grid
    try:
        fn = build()
        return measure(
            fn,
            run.device,
            warmup=g.warmup,
            repeats=g.repeats,
            sample_s=g.sample_s,
            max_calls=g.max_calls,
            budget_s=g.point_budget_s,
        )
    except torch.cuda.OutOfMemoryError:
        skipped.append(what)
        if run.is_cuda:
            torch.cuda.empty_cache()
        return None


def randn(shape: Sequence[int], run: Run) -> torch.Tensor:
    return torch.randn(*shape, dtype=run.dtype, device=run.device)


def cache_bytes(run: Run) -> int:
    """The last-level cache operands must outgrow to be read from memory: the GPU's L2,
    or the CPU's L3 (32 MiB where the system does not say)."""
    if run.is_cuda:
        props = torch.cuda.get_device_properties(run.device)
        return int(getattr(props, "L2_cache_size", 0)) or 64 * MiB
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE")
    except (ValueError, OSError):
        size = 0
    return size if size > 0 else 32 * MiB


COLD_FACTOR = 8
MAX_COPIES = 1024


def cold(run: Run, tensors: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    """`tensors` and enough clones of them to outgrow the cache COLD_FACTOR times over
    (at most MAX_COPIES sets): cycling through them, each call reads its operands from
    memory, as a forward pass does, where every layer's weights and KV cache are evicted
    by the other layers' before they are used again."""
    size = sum(t.numel() * t.element_size() for t in tensors)
    want = COLD_FACTOR * cache_bytes(run)
    copies = max(1, min(MAX_COPIES, math.ceil(want / max(size, 1))))
    return [tensors] + [tuple(t.clone() for t in tensors) for _ in range(copies - 1)]


def cycle(sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], tuple[torch.Tensor, ...]]:
    if len(sets) == 1:
        only = sets[0]
        return lambda: only
    return itertools.cycle(sets).__next__
