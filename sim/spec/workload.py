"""Workloads as a user writes them: when requests arrive and how many prompt and output
tokens each carries. Drawing the requests is sim.workload's job; this module validates.

What it models
  * Arrivals: renewal processes (Poisson, Gamma inter-arrivals with a chosen coefficient
    of variation, constant spacing), an on/off-modulated Poisson process, a burst at
    t = 0, or replay of a trace (Azure LLM inference CSV or a plain CSV).
  * Lengths: fixed, uniform, normal, lognormal, bounded Zipf, empirical (one CSV
    column), or joint (prompt, output) pairs drawn from a trace (`lengths:`).
  * Classes: several request classes share one arrival process; each request is
    assigned a class by weight, and each class has its own lengths and SLOs.
  * Sessions (`sessions:`): multi-turn conversations released in a closed loop (the
    next turn a think time after the previous answer), each prompt the whole history.
  * Shared prefixes (`prefixes:`): a share of the requests open with one of `count`
    system prompts of a given length, as an id and a length (no real tokens); the
    prefix is added to the drawn prompt length.

Assumptions
  * The first request arrives at t = 0 (as vLLM's benchmark_serving sends its first
    request at once); with `duration_s` the arrivals are those in [0, duration_s).
  * Lengths are independent of arrival times and of one another, except where a trace
    or `lengths:` keeps the recorded (prompt, output) pairs together.
  * Token counts are integers in [1, MAX_TOKENS = 2**31 - 1] (a bound far past any
    model's context that keeps every sum and product of counts exact in int64): a spec,
    trace or length file outside it is an error. Parametric distributions are *truncated* to
    [min, max] (sampled by inverse CDF, so no mass piles up on a bound; an unbounded law
    is cut at MAX_TOKENS, and one lying almost wholly above it is an error); recorded
    lengths longer than `max_prompt`/`max_output` are *cut* to it (Vidur's convention).
  * All randomness comes from `numpy.random.SeedSequence(seed)`, one child stream per
    concern (arrivals, class choice, each class's prompt and output), so changing one
    part of a workload leaves the draws of the others as they were. Same seed, same
    arrays, bit for bit.

Trace CSVs are read with pandas and validated column-wise: a bad row is an error that
names the file, its line and its column; no row is ever dropped silently.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from sim.errors import LlmsimError, valid_names
from sim.spec.base import Seconds, Spec, shown, validation_error
from sim.spec.recipes import merge_recipe
from sim.spec.slo import SLOSpec

# A run holds a handful of arrays of this length; past it, memory rather than time is
# what runs out, so a spec asking for more is an error, not a slow crash.
MAX_REQUESTS = 50_000_000
# Bounded Zipf is sampled from a CDF table over its whole support.
MAX_ZIPF_SUPPORT = 10_000_000
# The most tokens a prompt or an output may have (see the module docstring).
MAX_TOKENS = 2**31 - 1
PREFIX = "workload"

PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PosInt = Annotated[int, Field(ge=1)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]  # a token count (or a bound on one)
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
    value: Tokens


class UniformLength(Spec):
    """Integers min..max inclusive, equally likely."""

    dist: Literal["uniform"]
    min: Tokens
    max: Tokens

    @model_validator(mode="after")
    def _bounds(self) -> UniformLength:
        if self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        return self


def _check_mass(lo: float, hi: float, cap: float, where: str) -> None:
    """Truncation bounds (in standard-normal units) must keep some probability; so must
    [min, MAX_TOKENS] (`cap`) when no max is given and the draws are cut there."""
    if _normal_mass(lo, hi) < 1e-12:
        raise _bad("min", "min..max holds almost none of the distribution; widen them")
    if hi == math.inf and _normal_mass(lo, cap) < 1e-12:
        raise _bad(where, f"the distribution lies almost wholly above {MAX_TOKENS:,} tokens")


class NormalLength(Spec):
    """Normal, rounded to integers and truncated to [min, max]."""

    dist: Literal["normal"]
    mean: Annotated[float, Field(allow_inf_nan=False)]
    std: PosFloat
    min: Tokens = 1
    max: Tokens | None = None

    def z_bounds(self) -> tuple[float, float]:
        hi = math.inf if self.max is None else (self.max + 0.5 - self.mean) / self.std
        return (self.min - 0.5 - self.mean) / self.std, hi

    @model_validator(mode="after")
    def _bounds(self) -> NormalLength:
        if self.max is not None and self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        _check_mass(*self.z_bounds(), (MAX_TOKENS + 0.5 - self.mean) / self.std, "mean")
        return self


class LognormalLength(Spec):
    """exp(N(mu, sigma²)) rounded to integers and truncated to [min, max].

    Give `median` (= e^mu) or `mean` (= e^(mu + sigma²/2)) of the untruncated law.
    """

    dist: Literal["lognormal"]
    median: PosFloat | None = None
    mean: PosFloat | None = None
    sigma: PosFloat
    min: Tokens = 1
    max: Tokens | None = None

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
        cap = (math.log(MAX_TOKENS + 0.5) - self.mu) / self.sigma
        _check_mass(*self.z_bounds(), cap, "median" if self.median is not None else "mean")
        return self


class ZipfLength(Spec):
    """Values min..max with P(v) ∝ (v - min + 1)^-a."""

    dist: Literal["zipf"]
    a: PosFloat
    min: Tokens = 1
    max: Tokens

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
    max_prompt: Tokens | None = None
    max_output: Tokens | None = None


class TraceSpec(Spec):
    """Replay of arrivals and lengths from a file.

    `start_s` skips the first seconds (kept times are measured from it); `time_scale`
    divides the gaps (2.0 replays at twice the rate); `limit` caps the rows replayed.
    """

    path: str = Field(min_length=1)
    format: Literal["azure", "plain", "sessions", "auto"] = "auto"
    time_scale: PosFloat = 1.0
    start_s: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)] = 0.0
    limit: PosInt | None = None
    max_prompt: Tokens | None = None
    max_output: Tokens | None = None


class ClassSpec(Spec):
    """One request class: its share of arrivals, its lengths and its SLOs."""

    name: str = Field(min_length=1)
    weight: PosFloat = 1.0
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    lengths: LengthsSpec | None = None
    slo: SLOSpec | None = None


class PrefixSpec(Spec):
    """A shared prompt prefix (a system prompt): `tokens` long, opening a `share` of all
    requests, split evenly over `count` distinct prefixes of that length (tenants,
    apps). Requests carry no real tokens: a prefix is an id and a length, and the rest
    of a prompt is unique to its request."""

    tokens: Tokens
    share: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    count: PosInt = 1


class ExponentialThink(Spec):
    """Exponential think times with mean `mean` (seconds)."""

    dist: Literal["exponential"]
    mean: PosSeconds


class UniformThink(Spec):
    """Think times uniform in [min, max] seconds."""

    dist: Literal["uniform"]
    min: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)]
    max: Annotated[Seconds, Field(ge=0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _bounds(self) -> UniformThink:
        if self.max < self.min:
            raise _bad("max", f"must be >= min ({self.min}), got {self.max}")
        return self


ThinkTime = (
    Annotated[Seconds, Field(ge=0, allow_inf_nan=False)]
    | Annotated[ExponentialThink | UniformThink, Field(discriminator="dist")]
)


class SessionSpec(Spec):
    """Multi-turn sessions (closed loop): each arrival of the workload starts a session
    of `turns` turns; turn k + 1 arrives `think_time` after turn k finished, its prompt
    the whole history (turn k's prompt and output) plus a new `message`."""

    turns: LengthDist
    think_time: ThinkTime = 0.0  # seconds (fixed) or {dist: exponential|uniform, ...}
    message: LengthDist


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
    # Shared prompt prefixes, prepended to the drawn (or replayed) prompts.
    prefixes: tuple[PrefixSpec, ...] = ()
    # Multi-turn sessions: `requests`/`duration_s` then count sessions, not turns.
    sessions: SessionSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSpec:
        if self.sessions is not None:
            for key in ("trace", "classes", "lengths", "prefixes"):
                if getattr(self, key):
                    hint = " (a session trace carries its own turns)" if key == "trace" else ""
                    raise _bad(key, f"not supported with sessions{hint}")
        if sum(p.share for p in self.prefixes) > 1 + 1e-9:
            raise _bad("prefixes", "the shares add up to more than 1")
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
                raise _bad(f"classes.{i}.name", f"duplicate class name {shown(name)}")
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
            f"unknown class {shown(class_name)}; "
            f"{valid_names(class_name, self.class_names, 'classes')}",
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
            raise LlmsimError(f"load factor must be > 0, got {shown(factor)}", key=PREFIX)
        if self.trace is not None:
            trace = self.trace.model_copy(update={"time_scale": self.trace.time_scale * factor})
            return self.model_copy(update={"trace": trace})
        a = self.arrival
        if a is None or isinstance(a, BurstArrivals):
            raise LlmsimError("a burst has no rate to scale", key=f"{PREFIX}.arrival")
        return self.model_copy(update={"arrival": a.model_copy(update={"rate": a.rate * factor})})


def _normal_mass(lo: float, hi: float) -> float:
    from scipy import special  # only normal/lognormal lengths need it: keep start-up light

    if lo > 0:  # work in the tail where ndtr keeps its precision
        lo, hi = -hi, -lo
    return float(special.ndtr(hi) - special.ndtr(lo))


def parse_workload(
    data: Any, file: str | None = None, base_dir: Path | None = None
) -> WorkloadSpec:
    """Validate a scenario's `workload:` mapping (recipe resolved); errors name the
    file (the recipe's, for a key that came from it) and the key path."""
    if not isinstance(data, dict):
        raise LlmsimError(f"expected a mapping, got {type(data).__name__}", file=file, key=PREFIX)
    try:
        merged, origin = merge_recipe(data, base_dir, ())
    except LlmsimError as exc:
        # Keys from resolve_recipe are relative to the workload mapping; a recipe's own
        # file (malformed YAML, say) is kept over the scenario's.
        key = f"{PREFIX}.{exc.key}" if exc.key else (None if exc.file else PREFIX)
        raise LlmsimError(exc.message, file=exc.file or file, key=key) from None
    try:
        return WorkloadSpec.model_validate(merged)
    except ValidationError as exc:
        sources = {k: str(v) for k, v in origin.items()}
        raise validation_error(exc, file, WorkloadSpec, PREFIX, sources) from None
