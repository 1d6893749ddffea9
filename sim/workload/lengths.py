"""Prompt and output lengths drawn from a parametric law or a recorded column.

Token counts are integers in [1, MAX_TOKENS]. Parametric laws are *truncated* to [min,
max] (sampled by inverse CDF, so no mass piles up on a bound; without a max, draws past
MAX_TOKENS are cut to it); recorded lengths are drawn with replacement.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from sim.spec.workload import (
    MAX_TOKENS,
    EmpiricalLength,
    FixedLength,
    NormalLength,
    UniformLength,
    ZipfLength,
)
from sim.workload.traces import load_column, resolve_path


def _truncated_normal(rng: np.random.Generator, lo: float, hi: float, m: int) -> np.ndarray:
    """Standard normal draws conditioned on [lo, hi): scipy's truncated normal at
    uniform quantiles (inverse CDF, no rejection loop)."""
    from scipy import stats  # 1 s to import here: only parametric lengths pay for it

    out: np.ndarray = stats.truncnorm.ppf(rng.random(m), lo, hi)
    return out


@functools.lru_cache(maxsize=8)
def _zipf_cdf(a: float, size: int) -> np.ndarray:
    """The CDF of scipy's bounded Zipf (`zipfian`, P(k) ∝ k^-a on 1..size) as a table:
    drawing is then one binary search per value (its own `ppf` searches per value)."""
    from scipy import stats  # (as above)

    cdf: np.ndarray = stats.zipfian.cdf(np.arange(1, size + 1), a, size)
    cdf.setflags(write=False)
    return cdf


def draw_lengths(
    dist: Any, rng: np.random.Generator, m: int, base_dir: Path | None, key: str
) -> np.ndarray:
    if isinstance(dist, FixedLength):
        return np.full(m, dist.value, dtype=np.int64)
    if isinstance(dist, UniformLength):
        return rng.integers(dist.min, dist.max, size=m, endpoint=True, dtype=np.int64)
    if isinstance(dist, EmpiricalLength):
        path = resolve_path(dist.path, base_dir, key + ".path")
        values = load_column(path, dist.column, key + ".column")
        return values[rng.integers(0, len(values), size=m)]
    if isinstance(dist, ZipfLength):
        cdf = _zipf_cdf(dist.a, dist.max - dist.min + 1)
        rank = np.minimum(np.searchsorted(cdf, rng.random(m), side="right"), len(cdf) - 1)
        return rank.astype(np.int64) + dist.min
    lo, hi_z = dist.z_bounds()
    z = _truncated_normal(rng, lo, hi_z, m)
    if isinstance(dist, NormalLength):
        x = dist.mean + dist.std * z
    else:
        x = np.exp(dist.mu + dist.sigma * z)
    hi = MAX_TOKENS if dist.max is None else dist.max  # "unbounded" stops at the bound
    # Rounding maps [v - 0.5, v + 0.5) to v, which is why the bounds are widened by 0.5.
    return np.clip(np.rint(np.nan_to_num(x, posinf=hi)), dist.min, hi).astype(np.int64)
