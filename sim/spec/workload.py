"""Workloads: when requests arrive and how many prompt and output tokens each carries.

What it models
  * Arrivals: renewal processes (Poisson, Gamma inter-arrivals with a chosen coefficient
    of variation, constant spacing), an on/off-modulated Poisson process, a burst at
    t = 0, or replay of a trace (Azure LLM inference CSV or a plain CSV).
  * Lengths: fixed, uniform, normal, lognormal, bounded Zipf, empirical (one CSV
    column), or joint (prompt, output) pairs drawn from a trace (`lengths:`).
  * Classes: several request classes share one arrival process; each request is
    assigned a class by weight, and each class has its own lengths and SLOs.

Assumptions
  * The first request arrives at t = 0 (as vLLM's benchmark_serving sends its first
    request at once); with `duration_s` the arrivals are those in [0, duration_s).
  * Lengths are independent of arrival times and of one another, except where a trace
    or `lengths:` keeps the recorded (prompt, output) pairs together.
  * Token counts are integers >= 1. Parametric distributions are *truncated* to
    [min, max] (sampled by inverse CDF, so no mass piles up on a bound); recorded
    lengths longer than `max_prompt`/`max_output` are *cut* to it (Vidur's convention).
  * All randomness comes from `numpy.random.SeedSequence(seed)`, one child stream per
    concern (arrivals, class choice, each class's prompt and output), so changing one
    part of a workload leaves the draws of the others as they were. Same seed, same
    arrays, bit for bit.

Trace CSVs are read with pandas and validated column-wise: a bad row is an error that
names the file, its line and its column; no row is ever dropped silently.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from sim.errors import LlmsimError
from sim.spec.base import Seconds, Spec
from sim.spec.slo import SLOSpec
from sim.workload.traces import _load, _load_column, _resolve

# A run holds a handful of arrays of this length; past it, memory rather than time is
# what runs out, so a spec asking for more is an error, not a slow crash.
MAX_REQUESTS = 50_000_000
# Bounded Zipf is sampled from a CDF table over its whole support.
MAX_ZIPF_SUPPORT = 10_000_000
PREFIX = "workload"

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PosInt = Annotated[int, Field(ge=1)]
PosSeconds = Annotated[Seconds, Field(gt=0, allow_inf_nan=False)]


def _bad(key: str, message: str) -> PydanticCustomError:
    """A validation error placed at a sub-key of the model that raises it."""
    return PydanticCustomError("llmsim_key", "{message}", {"key": key, "message": message})


# ---------------------------------------------------------------------------- arrivals


class PoissonArrivals(Spec):
    """Poisson process: exponential inter-arrival times with mean 1/rate."""

    process: Literal["poisson"]
    rate: PosFloat  # requests per second


class GammaArrivals(Spec):
    """Renewal process with Gamma inter-arrivals: mean 1/rate, CV `cv` (> 1 is bursty)."""

    process: Literal["gamma"]
    rate: PosFloat
    cv: PosFloat


class ConstantArrivals(Spec):
    """Evenly spaced arrivals, 1/rate apart."""

    process: Literal["constant"]
    rate: PosFloat


class OnOffArrivals(Spec):
    """Poisson at `rate` during on periods of `on_s`, nothing for `off_s`; starts on."""

    process: Literal["onoff"]
    rate: PosFloat
    on_s: PosSeconds
    off_s: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)]


class BurstArrivals(Spec):
    """Every request at t = 0 (maximum-throughput benchmarks)."""

    process: Literal["burst"]


ArrivalSpec = Annotated[
    PoissonArrivals | GammaArrivals | ConstantArrivals | OnOffArrivals | BurstArrivals,
    Field(discriminator="process"),
]
PROCESSES = ("burst", "constant", "gamma", "onoff", "poisson")


# ----------------------------------------------------------------------------- lengths


class FixedLength(Spec):
    dist: Literal["fixed"]
    value: PosInt


class UniformLength(Spec):
    """Integers min..max inclusive, equally likely."""

    dist: Literal["uniform"]
    min: PosInt
    max: PosInt

    @model_validator(mode="after")
    def _bounds(self) -> UniformLength:
        if self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        return self


def _check_mass(lo: float, hi: float) -> None:
    """Truncation bounds (in standard-normal units) must keep some probability."""
    if _normal_mass(lo, hi) < 1e-12:
        raise _bad("min", "min..max holds almost none of the distribution; widen them")


class NormalLength(Spec):
    """Normal, rounded to integers and truncated to [min, max]."""

    dist: Literal["normal"]
    mean: Annotated[float, Field(allow_inf_nan=False)]
    std: PosFloat
    min: PosInt = 1
    max: PosInt | None = None

    def z_bounds(self) -> tuple[float, float]:
        hi = math.inf if self.max is None else (self.max + 0.5 - self.mean) / self.std
        return (self.min - 0.5 - self.mean) / self.std, hi

    @model_validator(mode="after")
    def _bounds(self) -> NormalLength:
        if self.max is not None and self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        _check_mass(*self.z_bounds())
        return self


class LognormalLength(Spec):
    """exp(N(mu, sigma²)) rounded to integers and truncated to [min, max].

    Give `median` (= e^mu) or `mean` (= e^(mu + sigma²/2)) of the untruncated law.
    """

    dist: Literal["lognormal"]
    median: PosFloat | None = None
    mean: PosFloat | None = None
    sigma: PosFloat
    min: PosInt = 1
    max: PosInt | None = None

    @property
    def mu(self) -> float:
        if self.median is not None:
            return math.log(self.median)
        assert self.mean is not None
        return math.log(self.mean) - self.sigma**2 / 2

    def z_bounds(self) -> tuple[float, float]:
        hi = math.inf if self.max is None else (math.log(self.max + 0.5) - self.mu) / self.sigma
        return (math.log(self.min - 0.5) - self.mu) / self.sigma, hi

    @model_validator(mode="after")
    def _bounds(self) -> LognormalLength:
        if (self.median is None) == (self.mean is None):
            raise _bad("median", "give median or mean (of the untruncated law), not both")
        if self.max is not None and self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        _check_mass(*self.z_bounds())
        return self


class ZipfLength(Spec):
    """Values min..max with P(v) ∝ (v - min + 1)^-a."""

    dist: Literal["zipf"]
    a: PosFloat
    min: PosInt = 1
    max: PosInt

    @model_validator(mode="after")
    def _bounds(self) -> ZipfLength:
        if self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        if self.max - self.min + 1 > MAX_ZIPF_SUPPORT:
            raise _bad("max", f"max - min + 1 must be <= {MAX_ZIPF_SUPPORT:,}")
        return self


class EmpiricalLength(Spec):
    """Values drawn with replacement from one column of a CSV."""

    dist: Literal["empirical"]
    path: str = Field(min_length=1)
    column: str = Field(min_length=1)


LengthDist = Annotated[
    FixedLength | UniformLength | NormalLength | LognormalLength | ZipfLength | EmpiricalLength,
    Field(discriminator="dist"),
]
DISTS = ("empirical", "fixed", "lognormal", "normal", "uniform", "zipf")


class LengthsSpec(Spec):
    """Joint (prompt, output) pairs drawn with replacement from a CSV (plain, azure, or
    two columns `prompt_tokens,output_tokens`); longer values are cut to the maxima."""

    path: str = Field(min_length=1)
    max_prompt: PosInt | None = None
    max_output: PosInt | None = None


class TraceSpec(Spec):
    """Replay of arrivals and lengths from a file.

    `start_s` skips the first seconds (kept times are measured from it); `time_scale`
    divides the gaps (2.0 replays at twice the rate); `limit` caps the rows replayed.
    """

    path: str = Field(min_length=1)
    format: Literal["azure", "plain", "auto"] = "auto"
    time_scale: PosFloat = 1.0
    start_s: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)] = 0.0
    limit: PosInt | None = None
    max_prompt: PosInt | None = None
    max_output: PosInt | None = None


class ClassSpec(Spec):
    """One request class: its share of arrivals, its lengths and its SLOs."""

    name: str = Field(min_length=1)
    weight: PosFloat = 1.0
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    lengths: LengthsSpec | None = None
    slo: SLOSpec | None = None


_LENGTH_KEYS = ("prompt", "output", "lengths")


class WorkloadSpec(Spec):
    """The `workload:` of a scenario (see the module docstring)."""

    requests: Annotated[int, Field(ge=1, le=MAX_REQUESTS)] | None = None
    duration_s: PosSeconds | None = None
    arrival: ArrivalSpec | None = None
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    lengths: LengthsSpec | None = None
    trace: TraceSpec | None = None
    classes: Annotated[tuple[ClassSpec, ...], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if self.trace is not None:
            for key in ("arrival", *_LENGTH_KEYS):
                if getattr(self, key) is not None:
                    raise _bad(key, "not allowed with trace: the trace gives arrivals and lengths")
            for i, cls in enumerate(self.classes or ()):
                for key in _LENGTH_KEYS:
                    if getattr(cls, key) is not None:
                        raise _bad(f"classes.{i}.{key}", "not allowed with trace")
        else:
            if self.requests is None and self.duration_s is None:
                raise _bad("requests", "give requests (how many) or duration_s (until when)")
            if self.requests is not None and self.duration_s is not None:
                raise _bad("duration_s", "give requests or duration_s, not both")
            if self.arrival is None:
                raise _bad("arrival", "required key is missing, e.g. {process: poisson, rate: 3}")
            if isinstance(self.arrival, BurstArrivals) and self.duration_s is not None:
                raise _bad("duration_s", "burst puts every request at t = 0; give requests")
            self._check_lengths()
        names = [c.name for c in self.classes or ()]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _bad(f"classes.{i}.name", f"duplicate class name {name!r}")
        return self

    def _check_lengths(self) -> None:
        if self.lengths is not None and (self.prompt or self.output):
            raise _bad("lengths", "give lengths (joint pairs) or prompt/output, not both")
        for i, cls in enumerate(self.classes or (None,)):
            where = f"classes.{i}." if cls is not None else ""
            if cls is not None and cls.lengths is not None:
                if cls.prompt or cls.output:
                    raise _bad(f"{where}lengths", "give lengths or prompt/output, not both")
                continue
            own = cls is not None and (cls.prompt or cls.output)
            if self.lengths is not None and not own:
                continue  # inherits the top-level joint pairs whole
            for key in ("prompt", "output"):
                if getattr(cls, key, None) is None and getattr(self, key) is None:
                    hint = " (top-level lengths are joint pairs, taken whole or not)" if own else ""
                    raise _bad(f"{where}{key}", "required key is missing" + hint)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes) if self.classes else ("default",)

    def resolved_classes(self) -> tuple[ClassSpec, ...]:
        """The classes with inherited lengths filled in (`default` when none are given)."""
        top = {"prompt": self.prompt, "output": self.output, "lengths": self.lengths}
        if not self.classes:
            return (ClassSpec(name="default", **top),)
        resolved = []
        for cls in self.classes:
            if cls.lengths is None and cls.prompt is None and cls.output is None:
                cls = cls.model_copy(update=top)
            elif cls.lengths is None:
                cls = cls.model_copy(
                    update={
                        "prompt": cls.prompt or self.prompt,
                        "output": cls.output or self.output,
                    }
                )
            resolved.append(cls)
        return tuple(resolved)

    def slo_for(self, class_name: str) -> SLOSpec | None:
        """The class's own SLOs; None means the scenario's SLOs apply."""
        for cls in self.classes or ():
            if cls.name == class_name:
                return cls.slo
        if not self.classes and class_name == "default":
            return None
        raise LlmsimError(
            f"unknown class {class_name!r}; valid classes: {', '.join(self.class_names)}",
            key=f"{PREFIX}.classes",
        )

    @property
    def mean_rate_per_s(self) -> float | None:
        """Long-run offered arrivals per second (None for a burst or a trace)."""
        a = self.arrival
        if isinstance(a, OnOffArrivals):
            return a.rate * a.on_s / (a.on_s + a.off_s)
        if isinstance(a, PoissonArrivals | GammaArrivals | ConstantArrivals):
            return a.rate
        return None

    def scaled(self, factor: float) -> WorkloadSpec:
        """The same workload offered `factor` times as fast (for load sweeps)."""
        if not factor > 0 or not math.isfinite(factor):
            raise LlmsimError(f"load factor must be > 0, got {factor}", key=PREFIX)
        if self.trace is not None:
            trace = self.trace.model_copy(update={"time_scale": self.trace.time_scale * factor})
            return self.model_copy(update={"trace": trace})
        a = self.arrival
        if a is None or isinstance(a, BurstArrivals):
            raise LlmsimError("a burst has no rate to scale", key=f"{PREFIX}.arrival")
        return self.model_copy(update={"arrival": a.model_copy(update={"rate": a.rate * factor})})


# ------------------------------------------------------------------------------ result


@dataclass(frozen=True, eq=False)
class Arrivals:
    """The generated requests, in arrival order; the arrays are read-only."""

    arrival_s: np.ndarray  # float64, non-decreasing
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    class_index: np.ndarray  # int32 index into class_names
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        for arr in (self.arrival_s, self.prompt_tokens, self.output_tokens, self.class_index):
            arr.setflags(write=False)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "arrival_s": self.arrival_s,
                "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
                "class": pd.Categorical.from_codes(self.class_index, pd.Index(self.class_names)),
            }
        )


# ---------------------------------------------------------------------------- generate


def generate(spec: WorkloadSpec, seed: int, base_dir: Path | None = None) -> Arrivals:
    """Draw the requests of `spec`; relative paths resolve from `base_dir`, then the
    catalog roots."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise LlmsimError(f"expected a non-negative integer, got {seed!r}", key="seed")
    classes = spec.resolved_classes()
    # Child i of a SeedSequence depends only on i, so adding a class moves no stream.
    arrival_ss, class_ss, *class_ss_list = np.random.SeedSequence(int(seed)).spawn(2 + len(classes))
    if spec.trace is not None:
        times, prompts, outputs = _replay(spec, spec.trace, base_dir)
    else:
        times = _arrival_times(spec, np.random.default_rng(arrival_ss))
    n = len(times)
    if len(classes) == 1:
        class_index = np.zeros(n, dtype=np.int32)
    else:
        weights = np.array([c.weight for c in classes])
        rng = np.random.default_rng(class_ss)
        class_index = rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int32)
    if spec.trace is None:
        prompts = np.empty(n, dtype=np.int64)
        outputs = np.empty(n, dtype=np.int64)
        for i, cls in enumerate(classes):
            rows: slice | np.ndarray = slice(None)
            if len(classes) > 1:
                rows = np.flatnonzero(class_index == i)
            m = n if isinstance(rows, slice) else len(rows)
            prompt_rng, output_rng = (np.random.default_rng(s) for s in class_ss_list[i].spawn(2))
            if cls.lengths is not None:
                key = _source_key(spec, i, "lengths")
                table = _load(_resolve(cls.lengths.path, base_dir, key + ".path"), "auto", False)
                pick = prompt_rng.integers(0, len(table.prompt_tokens), size=m)
                prompts[rows] = _cut(table.prompt_tokens[pick], cls.lengths.max_prompt)
                outputs[rows] = _cut(table.output_tokens[pick], cls.lengths.max_output)
            else:
                assert cls.prompt is not None and cls.output is not None
                p_key, o_key = _source_key(spec, i, "prompt"), _source_key(spec, i, "output")
                prompts[rows] = _draw(cls.prompt, prompt_rng, m, base_dir, p_key)
                outputs[rows] = _draw(cls.output, output_rng, m, base_dir, o_key)
    return Arrivals(times, prompts, outputs, class_index, spec.class_names)


def _source_key(spec: WorkloadSpec, i: int, field: str) -> str:
    if spec.classes and getattr(spec.classes[i], field) is not None:
        return f"{PREFIX}.classes.{i}.{field}"
    return f"{PREFIX}.{field}"


def _cut(values: np.ndarray, limit: int | None) -> np.ndarray:
    return values if limit is None else np.minimum(values, limit)


def _arrival_times(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray:
    a, n, until = spec.arrival, spec.requests, spec.duration_s
    if isinstance(a, BurstArrivals):
        assert n is not None
        return np.zeros(n)
    if isinstance(a, ConstantArrivals):
        if n is None:
            assert until is not None
            _check_expected(until * a.rate)
            n = math.ceil(until * a.rate) + 1
            times = np.arange(n) / a.rate
            return times[: np.searchsorted(times, until, side="left")]
        return np.arange(n) / a.rate
    if isinstance(a, PoissonArrivals):
        return _renewal(lambda m: rng.exponential(1.0 / a.rate, m), a.rate, n, until)
    if isinstance(a, GammaArrivals):
        shape = 1.0 / a.cv**2  # Gamma(k, θ) has CV 1/√k and mean kθ = 1/rate
        return _renewal(lambda m: rng.gamma(shape, 1.0 / (a.rate * shape), m), a.rate, n, until)
    assert isinstance(a, OnOffArrivals)
    # A Poisson process in "on-time" (the clock that runs only while on), mapped onto
    # the wall clock by inserting an off period after each `on_s` of on-time.
    period = a.on_s + a.off_s
    on_until = None
    if until is not None:
        full, rest = divmod(until, period)
        on_until = full * a.on_s + min(rest, a.on_s)
    on_time = _renewal(lambda m: rng.exponential(1.0 / a.rate, m), a.rate, n, on_until)
    cycles, within = np.divmod(on_time, a.on_s)
    return cycles * period + within


def _check_expected(expected: float) -> None:
    if expected > MAX_REQUESTS:
        raise LlmsimError(
            f"about {expected:,.0f} requests expected; at most {MAX_REQUESTS:,} are supported",
            key=f"{PREFIX}.duration_s",
        )


def _renewal(draw: Any, rate: float, n: int | None, until: float | None) -> np.ndarray:
    """Arrival times 0, g1, g1+g2, ...: `n` of them, or all those before `until`."""
    if n is not None:
        times = np.zeros(n)
        np.cumsum(draw(n - 1), out=times[1:])
        return times
    assert until is not None
    expected = until * rate
    _check_expected(expected)
    # Chunks sized to overshoot with high probability, so one draw is the usual case.
    size = int(expected + 6 * math.sqrt(expected) + 64)
    chunks, last, total = [np.zeros(1)], 0.0, 1
    while last < until:
        chunk = last + np.cumsum(draw(size))
        chunks.append(chunk)
        last, total = float(chunk[-1]), total + size
        _check_expected(total)
    times = np.concatenate(chunks)
    return times[: np.searchsorted(times, until, side="left")]


def _normal_mass(lo: float, hi: float) -> float:
    from scipy import special  # only normal/lognormal lengths need it: keep start-up light

    if lo > 0:  # work in the tail where ndtr keeps its precision
        lo, hi = -hi, -lo
    return float(special.ndtr(hi) - special.ndtr(lo))


def _truncated_normal(rng: np.random.Generator, lo: float, hi: float, m: int) -> np.ndarray:
    """Standard normal draws conditioned on [lo, hi), by inverse CDF (no rejection loop)."""
    from scipy import special

    flip = lo > 0
    if flip:
        lo, hi = -hi, -lo
    u = rng.uniform(special.ndtr(lo), special.ndtr(hi), m)
    z = special.ndtri(u)
    return -z if flip else z


@functools.lru_cache(maxsize=8)
def _zipf_cdf(a: float, size: int) -> np.ndarray:
    weights = np.arange(1, size + 1, dtype=np.float64) ** -a
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


def _draw(
    dist: Any, rng: np.random.Generator, m: int, base_dir: Path | None, key: str
) -> np.ndarray:
    if isinstance(dist, FixedLength):
        return np.full(m, dist.value, dtype=np.int64)
    if isinstance(dist, UniformLength):
        return rng.integers(dist.min, dist.max, size=m, endpoint=True, dtype=np.int64)
    if isinstance(dist, EmpiricalLength):
        path = _resolve(dist.path, base_dir, key + ".path")
        values = _load_column(path, dist.column, key + ".column")
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
    hi = 2**53 if dist.max is None else dist.max  # "unbounded" still fits an int64
    # Rounding maps [v - 0.5, v + 0.5) to v, which is why the bounds are widened by 0.5.
    return np.clip(np.rint(np.nan_to_num(x, posinf=hi)), dist.min, hi).astype(np.int64)


def _replay(
    spec: WorkloadSpec, tr: TraceSpec, base_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _load(_resolve(tr.path, base_dir, f"{PREFIX}.trace.path"), tr.format, True)
    assert table.arrival_s is not None
    # Rows [first, stop) of the file are replayed.
    first = int(np.searchsorted(table.arrival_s, tr.start_s, side="left"))
    stop = len(table.arrival_s)
    if tr.limit is not None:
        stop = min(stop, first + tr.limit)
    times = (table.arrival_s[first:stop] - tr.start_s) / tr.time_scale
    if spec.duration_s is not None:
        times = times[: np.searchsorted(times, spec.duration_s, side="left")]
    if spec.requests is not None:
        if spec.requests > len(times):
            raise LlmsimError(
                f"{spec.requests} requested but the trace has {len(times)} "
                "after start_s, limit and duration_s",
                key=f"{PREFIX}.requests",
            )
        times = times[: spec.requests]
    if len(times) == 0:
        raise LlmsimError("no requests left after start_s/limit/duration_s", key=f"{PREFIX}.trace")
    stop = first + len(times)
    prompts = _cut(table.prompt_tokens[first:stop], tr.max_prompt).copy()
    outputs = _cut(table.output_tokens[first:stop], tr.max_output).copy()
    return times, prompts, outputs


# ----------------------------------------------------------------------------- recipes

_RECIPE_META = ("name", "description", "source", "aliases", "notes")


def resolve_recipe(data: dict, base_dir: Path | None = None) -> dict:
    """Merge `workload: {recipe: NAME, ...}` over the named recipe in workloads/.

    The scenario's keys override the recipe's. A mapping of the same `process`/`dist`
    is merged key by key (so `lengths: {max_prompt: 4096}` keeps the recipe's path);
    giving lengths in one form drops the recipe's other forms, and `requests` drops the
    recipe's `duration_s` (and the reverse). Error keys are relative to the workload
    mapping (`recipe`), for the caller to place under its own prefix.
    """
    return _resolve_recipe(data, base_dir, ())[0]


def _resolve_recipe(
    data: dict, base_dir: Path | None, seen: tuple[Path, ...]
) -> tuple[dict, dict[str, Path]]:
    """The merged mapping, and for each top-level key taken from a recipe, its file."""
    from sim.spec import catalog

    if "recipe" not in data:
        return dict(data), {}
    name = data["recipe"]
    if not isinstance(name, str) or not name:
        raise LlmsimError(f"expected a recipe name, got {name!r}", key="recipe")
    local = (base_dir or Path.cwd()) / name
    try:
        path = local if local.suffix in (".yaml", ".yml") and local.is_file() else None
        path = path or catalog.find("workload", name)
    except LlmsimError:
        recipes = sorted(e.name for e in catalog.entries("workload") if e.path.suffix == ".yaml")
        message = f"unknown recipe {name!r}; valid recipes: {', '.join(recipes)}"
        raise LlmsimError(message, key="recipe") from None
    if path.suffix not in (".yaml", ".yml"):
        raise LlmsimError(f"{name!r} is not a recipe (.yaml)", key="recipe")
    path = path.resolve()
    if path in seen:
        raise LlmsimError("recipe includes itself", file=str(path), key="recipe")
    raw = catalog.read_yaml(path)
    if not isinstance(raw, dict):
        raise LlmsimError("expected a mapping", file=str(path))
    recipe = _rebase_paths({k: v for k, v in raw.items() if k not in _RECIPE_META}, path.parent)
    recipe, origin = _resolve_recipe(recipe, path.parent, (*seen, path))
    origin = {k: origin.get(k, path) for k in recipe}

    given = {k: v for k, v in data.items() if k != "recipe"}
    dropped: set[str] = set()
    if "trace" in given:
        dropped |= {"arrival", "prompt", "output", "lengths"}
    if "lengths" in given:
        dropped |= {"prompt", "output", "trace"}
    if given.keys() & {"prompt", "output"}:
        dropped |= {"lengths", "trace"}
    if "arrival" in given:
        dropped.add("trace")
    if "requests" in given:
        dropped.add("duration_s")
    if "duration_s" in given:
        dropped.add("requests")
    merged = {k: v for k, v in recipe.items() if k not in dropped}
    for key, value in given.items():
        merged[key] = _merge(merged.get(key), value)
        origin.pop(key, None)
    return merged, {k: v for k, v in origin.items() if k in merged}


def _merge(base: Any, over: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    for tag in ("process", "dist"):
        if tag in over and over[tag] != base.get(tag):
            return over  # another variant: the recipe's other keys would not fit it
    return {**base, **over}


def _rebase_paths(value: Any, folder: Path) -> Any:
    """A recipe's relative `path:` that exists beside the recipe is made absolute, so
    it survives being merged into a scenario elsewhere; others resolve as usual."""
    if isinstance(value, list):
        return [_rebase_paths(v, folder) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _rebase_paths(v, folder) for k, v in value.items()}
    path = out.get("path")
    if isinstance(path, str) and not Path(path).is_absolute() and (folder / path).is_file():
        out["path"] = str((folder / path).resolve())
    return out


def parse_workload(
    data: Any, file: str | None = None, base_dir: Path | None = None
) -> WorkloadSpec:
    """Validate a scenario's `workload:` mapping (recipe resolved); errors name the
    file (the recipe's, for a key that came from it) and the key path."""
    if not isinstance(data, dict):
        raise LlmsimError(f"expected a mapping, got {type(data).__name__}", file=file, key=PREFIX)
    try:
        merged, origin = _resolve_recipe(data, base_dir, ())
    except LlmsimError as exc:
        # Keys from resolve_recipe are relative to the workload mapping; a recipe's own
        # file (malformed YAML, say) is kept over the scenario's.
        key = f"{PREFIX}.{exc.key}" if exc.key else (None if exc.file else PREFIX)
        raise LlmsimError(exc.message, file=exc.file or file, key=key) from None
    try:
        return WorkloadSpec.model_validate(merged)
    except ValidationError as exc:
        raise _spec_error(exc, file, origin) from None


# ------------------------------------------------------------------------------ errors

_TAGS = {"process": PROCESSES, "dist": DISTS}
_PLURAL = {"process": "processes", "dist": "dists"}


def _spec_error(exc: ValidationError, file: str | None, origin: dict[str, Path]) -> LlmsimError:
    """The first pydantic error as one line: the YAML key path (union tags taken out
    of it and named in the message instead) and a plain message."""
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not str(p).startswith("function-")]
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    path: list[Any] = []
    variant = ""
    for part in loc:
        if path and path[-1] in ("arrival", "prompt", "output") and part in PROCESSES + DISTS:
            variant = f" ({'process' if part in PROCESSES else 'dist'}: {part})"
            continue
        path.append(part)
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "llmsim_key":
        path += ctx["key"].split(".")
        msg = ctx["message"]
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = ctx["discriminator"].strip("'")
        path.append(tag)
        valid = ", ".join(_TAGS[tag])
        if kind == "union_tag_invalid":
            msg = f"unknown {tag} {ctx['tag']!r}; valid {_PLURAL[tag]}: {valid}"
        else:
            msg = f"required key is missing; valid {_PLURAL[tag]}: {valid}"
    elif kind == "extra_forbidden":
        valid_keys = _keys_at(list(err["loc"])[:-1])
        msg = "unknown key" + (f"; valid keys: {', '.join(valid_keys)}" if valid_keys else "")
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(ctx.values()))
        msg = f"must be {op} {_num(bound)}, got {got!r}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"expected a mapping, got {got!r}"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = f"expected an integer, got {got!r}"
    elif kind in ("float_parsing", "float_type", "finite_number"):
        msg = f"expected a finite number, got {got!r}"
    elif kind == "value_error":
        pass  # the unit parsers' messages already show the value
    elif "input" in err:
        msg = f"{msg} (got {got!r})"
    key = ".".join(str(p) for p in [PREFIX, *path])
    source = origin.get(str(path[0])) if path else None
    return LlmsimError(msg + variant, file=str(source) if source else file, key=key)


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _keys_at(loc: list[Any]) -> list[str]:
    """The keys valid at a pydantic `loc` (for "unknown key" messages)."""
    model: Any = WorkloadSpec
    for part in loc:
        if isinstance(part, int):
            continue
        if model in _TAGGED_UNIONS:
            model = _TAGGED_UNIONS[model].get(part)
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    fields = getattr(model, "model_fields", None)
    if not fields:
        return []
    return sorted((f.alias or name) for name, f in fields.items())


def _model_of(annotation: Any) -> Any:
    """The model (or tagged-union name) inside Optional / tuple / Annotated."""
    models = _models_in(annotation)
    if len(models) == 1:
        return models[0]
    for union, variants in _TAGGED_UNIONS.items():
        if set(variants.values()) == set(models):
            return union
    return None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _tagged(field: str, *models: type[BaseModel]) -> dict[str, type[BaseModel]]:
    return {get_args(m.model_fields[field].annotation)[0]: m for m in models}


_TAGGED_UNIONS: dict[str, dict[str, type[BaseModel]]] = {
    "arrival": _tagged(
        "process", PoissonArrivals, GammaArrivals, ConstantArrivals, OnOffArrivals, BurstArrivals
    ),
    "length": _tagged(
        "dist",
        FixedLength,
        UniformLength,
        NormalLength,
        LognormalLength,
        ZipfLength,
        EmpiricalLength,
    ),
}
