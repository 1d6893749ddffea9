"""Capacity: the highest arrival rate at which a scenario still meets its SLOs.

What is computed
  * A run's *attainment* is the share of the requests in its measurement window that
    finished and met every SLO bound of their class (TTFT, TPOT and end-to-end; the
    class's own SLO from `workload.slo_for`, else the scenario's). The window holds the
    requests that arrived after the first `warmup` fraction of the arrival span and
    before its last `drain` fraction, so a run is judged at steady state rather than on
    an empty cluster warming up or one draining after the last arrival. A rejected or
    unfinished request in the window is a miss.
  * Throughput and goodput are measured over the same interval of simulated time, by
    completion: requests (and output tokens) finished inside the window per second, and
    of those the ones that met their SLOs. Goodput never exceeds throughput, and past
    saturation throughput stays at what the cluster serves, not what is offered.
  * The search varies one thing, the arrival-rate scale factor (`WorkloadSpec.scaled`:
    the process's rate, or a trace replayed faster). It brackets first (start at the
    scenario's own rate, double while a probe passes or halve while it fails) and then
    bisects the bracket geometrically until `hi / lo - 1 <= tolerance`. A probe runs the
    scenario at `seeds` seeds (seed, seed+1, ...) and passes when the *mean* attainment
    reaches the target. The capacity is the highest rate that passed.
  * The confidence interval joins the bisection bounds with the seed-to-seed spread.
    Each probe's mean attainment has a standard error s/√k over its k seeds; a probe
    passes *with confidence* when mean − t·se ≥ target and fails with confidence when
    mean + t·se < target, t the two-sided 95% Student-t quantile with k − 1 degrees of
    freedom. The interval runs from the highest confident pass (at or below the
    capacity) to the lowest confident fail (at or above the bracket's failing end). With
    no spread between seeds (or one seed) it is exactly the bisection bracket [lo, hi].
    With noise, once the bisection has converged, the search probes outward from each
    end of the bracket (steps of tolerance × 1, 2, 4, ...; at most MAX_WIDEN a side)
    until a probe is confident or it reaches the nearest confident probe already run,
    so the interval ends on the nearest probes the seeds agree on. Where none is found
    the lower end is 0 and the upper end unknown (None).
  * The throughput–latency curve runs the scenario at a list of loads (multiples of the
    capacity) and reports, per load, the offered rate, achieved throughput, goodput,
    attainment and the p50/p99 TTFT and TPOT of the window's finished requests, each the
    mean over the seeds.

Assumptions
  * Attainment falls with load (within noise), so a bracket holds one crossing. Where it
    does not, bisection still returns a rate that passed next to one that failed.
  * Runs are deterministic (same seed, same results), so probes can run in worker
    processes (`jobs`) in any order and the result is the same as with `jobs=1`: seeds
    of one probe and the loads of the curve run in parallel; the probes of the search,
    each depending on the last, run in turn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.errors import LlmsimError
from sim.results.report import json_safe
from sim.results.summary import latency_columns, meets_slo
from sim.spec.slo import SLOSpec
from sim.studies.compare import check_jobs

if TYPE_CHECKING:
    from sim.results.run import Results
    from sim.spec.scenario import Scenario

DEFAULT_LOADS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)
MAX_DOUBLINGS = 24  # the bracket never leaves [2^-24, 2^24] × the scenario's rate
CONFIDENCE = 0.95
MAX_WIDEN = 6  # probes per side the interval may add beyond the bracket
STEADY_SHARE = 0.9  # completions below this share of arrivals: not at steady state


# ----------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunMetrics:
    """What one run (one load, one seed) gave inside its measurement window."""

    rate_rps: float  # offered
    seed: int
    window_requests: int
    attainment: float
    throughput_rps: float
    goodput_rps: float
    output_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    devices: int
    usd_per_hour: float | None
    usd_per_million_output_tokens: float | None
    wall_s: float


def check_slo(scenario: Scenario) -> None:
    """A capacity needs something to hold: the scenario's SLO or a class's own."""
    classes = scenario.workload.classes or ()
    if scenario.slo.empty and all(c.slo is None or c.slo.empty for c in classes):
        raise scenario.error(
            "capacity needs an SLO to hold: give slo: {ttft: ..., tpot: ..., e2e: ...} "
            "(or a class's own slo)",
            "slo",
        )


def class_slos(scenario: Scenario) -> dict[str, SLOSpec]:
    """Each class's SLO: its own, else the scenario's."""
    wl = scenario.workload
    return {name: wl.slo_for(name) or scenario.slo for name in wl.class_names}


def window_bounds(arrival_s: np.ndarray, warmup: float, drain: float) -> tuple[float, float]:
    """[lo, hi] of arrival times: the span less its first `warmup` and last `drain`."""
    t0, t1 = float(arrival_s.min()), float(arrival_s.max())
    span = t1 - t0
    return t0 + warmup * span, t1 - drain * span


def run_metrics(results: Results, rate_rps: float, warmup: float, drain: float) -> RunMetrics:
    """Attainment, throughput, goodput and latency percentiles of a run's window (see
    the module docstring for what the window is and how each is counted)."""
    scenario = results.scenario
    req = results.requests
    if len(req) == 0:
        raise scenario.error("the workload has no requests", "workload")
    arrival = req["arrival_s"].to_numpy(dtype=float)
    lo, hi = window_bounds(arrival, warmup, drain)
    in_window = (arrival >= lo) & (arrival <= hi)
    n_window = int(in_window.sum())
    if n_window == 0 or hi <= lo:
        raise scenario.error(
            "the measurement window holds no requests: raise workload.requests (or lower "
            "warmup and drain)",
            "workload",
        )
    lat = latency_columns(req)
    met = pd.Series(False, index=req.index)
    classes = lat["class"].astype(str)
    for name, slo in class_slos(scenario).items():
        rows = lat[classes == name]
        met.loc[rows.index] = meets_slo(rows, slo).to_numpy()
    met_np = met.to_numpy(dtype=bool)
    window_idx = req.index[in_window]
    attainment = float(met_np[in_window].sum()) / n_window

    finish = req["finish_s"].to_numpy(dtype=float)
    finished = (req["status"] == "finished").to_numpy()
    done_in = finished & (finish >= lo) & (finish <= hi)
    seconds = hi - lo
    out_tokens = req["output_tokens"].to_numpy(dtype=float)
    throughput = float(done_in.sum()) / seconds
    goodput = float((done_in & met_np).sum()) / seconds
    tokens_per_s = float(out_tokens[done_in].sum()) / seconds

    cohort = lat.loc[lat.index.intersection(window_idx)]
    ttft = _quantiles(cohort["ttft_s"])
    tpot = _quantiles(cohort["tpot_s"])
    cost = results.summary.get("cost") or {}
    per_hour = cost.get("usd_per_hour")
    per_million = (
        per_hour / 3600.0 / tokens_per_s * 1e6 if per_hour is not None and tokens_per_s else None
    )
    return RunMetrics(
        rate_rps=rate_rps,
        seed=scenario.seed,
        window_requests=n_window,
        attainment=attainment,
        throughput_rps=throughput,
        goodput_rps=goodput,
        output_tokens_per_s=tokens_per_s,
        ttft_p50_s=ttft[0],
        ttft_p99_s=ttft[1],
        tpot_p50_s=tpot[0],
        tpot_p99_s=tpot[1],
        devices=int(cost["devices"]),
        usd_per_hour=per_hour,
        usd_per_million_output_tokens=per_million,
        wall_s=results.wall_s,
    )


def _quantiles(values: pd.Series) -> tuple[float | None, float | None]:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return None, None
    p50, p99 = np.percentile(v, [50, 99])
    return float(p50), float(p99)


@dataclass(frozen=True)
class _Point:
    """One run to do: the scenario at `factor` × its rate, with `seed`."""

    scenario: Scenario
    factor: float
    rate_rps: float
    seed: int
    warmup: float
    drain: float


def _run_point(point: _Point) -> RunMetrics:
    """Simulate one point (module level: it runs in a worker process)."""
    from sim.results.run import simulate

    s = point.scenario
    scaled = s.model_copy(update={"workload": s.workload.scaled(point.factor), "seed": point.seed})
    results = simulate(scaled, records=False)
    return run_metrics(results, point.rate_rps, point.warmup, point.drain)


# ----------------------------------------------------------------------- results


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


@dataclass(frozen=True)
class Probe:
    """One load tried by the search (or the curve): every seed's run and their means."""

    factor: float  # × the scenario's rate
    rate_rps: float
    runs: tuple[RunMetrics, ...]
    target: float
    phase: str = "curve"  # bracket | bisect | interval | curve

    @property
    def attainments(self) -> tuple[float, ...]:
        return tuple(r.attainment for r in self.runs)

    @property
    def attainment(self) -> float:
        return float(np.mean(self.attainments))

    @property
    def attainment_se(self) -> float:
        """Standard error of the mean attainment over seeds (0 with one seed)."""
        k = len(self.runs)
        return float(np.std(self.attainments, ddof=1) / math.sqrt(k)) if k > 1 else 0.0

    @property
    def passed(self) -> bool:
        return self.attainment >= self.target

    def _margin(self) -> float:
        k = len(self.runs)
        if k < 2:
            return 0.0
        from scipy.stats import t

        return float(t.ppf(0.5 + CONFIDENCE / 2, k - 1)) * self.attainment_se

    @property
    def confident_pass(self) -> bool:
        return self.attainment - self._margin() >= self.target

    @property
    def confident_fail(self) -> bool:
        return self.attainment + self._margin() < self.target

    def mean(self, name: str) -> float | None:
        """The mean over seeds of one `RunMetrics` field."""
        return _mean([getattr(r, name) for r in self.runs])

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "factor": self.factor,
            "rate_rps": self.rate_rps,
            "attainment": self.attainment,
            "attainment_se": self.attainment_se,
            "attainments": list(self.attainments),
            "passed": self.passed,
            "confident": self.confident_pass or self.confident_fail,
            **{name: self.mean(name) for name in CURVE_METRICS},
        }


CURVE_METRICS = (
    "throughput_rps",
    "goodput_rps",
    "output_tokens_per_s",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "usd_per_million_output_tokens",
)


@dataclass(frozen=True)
class CapacityResult:
    """The capacity of a scenario, how it was found, and the curve around it."""

    scenario: str
    target: float
    seeds: tuple[int, ...]
    warmup: float
    drain: float
    tolerance: float
    base_rate_rps: float  # the scenario's own offered rate (factor 1)
    capacity_rps: float  # the highest rate that passed (0 when none did)
    interval_rps: tuple[float, float | None]  # 95%: bisection bounds ∪ seed spread
    bracket_rps: tuple[float, float | None]  # (highest pass, lowest fail)
    converged: bool  # the bracket shrank to the tolerance
    note: str  # why not, when the search stopped short
    at_capacity: Probe | None
    probes: tuple[Probe, ...]
    devices: int
    usd_per_hour: float | None
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def goodput_rps(self) -> float | None:
        return self.at_capacity.mean("goodput_rps") if self.at_capacity else None

    @property
    def usd_per_million_output_tokens(self) -> float | None:
        p = self.at_capacity
        return p.mean("usd_per_million_output_tokens") if p else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Signs that the answer is shaky. A cluster at steady state completes in the
        window about what arrives in it; much less means the runs end while the
        cluster is still filling up (the work in flight grows for longer than the
        window lasts), and then attainment, and so the capacity, read high."""
        at = self.at_capacity
        done = at.mean("throughput_rps") if at is not None else None
        if at is None or done is None or done >= STEADY_SHARE * at.rate_rps:
            return ()
        return (
            f"at capacity the window completes {done:,.3g} req/s of the {at.rate_rps:,.3g} "
            f"offered ({done / at.rate_rps:.0%}): the runs may be too short to reach steady "
            "state; raise workload.requests (or workload.duration_s) and search again",
        )

    def to_dict(self) -> dict[str, Any]:
        at = self.at_capacity
        return {
            "scenario": self.scenario,
            "target": self.target,
            "seeds": list(self.seeds),
            "warmup": self.warmup,
            "drain": self.drain,
            "tolerance": self.tolerance,
            "base_rate_rps": self.base_rate_rps,
            "capacity_rps": self.capacity_rps,
            "interval_rps": list(self.interval_rps),
            "bracket_rps": list(self.bracket_rps),
            "converged": self.converged,
            "note": self.note,
            "warnings": list(self.warnings),
            "goodput_rps": self.goodput_rps,
            "devices": self.devices,
            "usd_per_hour": self.usd_per_hour,
            "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
            "at_capacity": at.to_dict() if at else None,
            "probes": [p.to_dict() for p in self.probes],
            "curve": json_safe(self.curve.to_dict(orient="records")),
        }


# ------------------------------------------------------------------------ search


def base_rate_rps(scenario: Scenario) -> float:
    """The scenario's own offered rate: its arrival process's mean rate, or for a trace
    the replayed requests over their arrival span."""
    wl = scenario.workload
    rate = wl.mean_rate_per_s
    if rate is not None:
        return float(rate)
    if wl.trace is None:
        raise scenario.error("a burst has no rate to search over", "workload.arrival")
    from sim.workload.arrivals import generate

    arrivals = generate(wl, scenario.seed, scenario.base_dir).arrival_s
    span = float(arrivals.max() - arrivals.min()) if len(arrivals) else 0.0
    if len(arrivals) < 2 or span <= 0:
        raise scenario.error("the trace needs two or more arrivals apart in time", "workload")
    return (len(arrivals) - 1) / span


def _check_options(target: float, seeds: int, warmup: float, drain: float, tol: float) -> None:
    if not 0 < target <= 1:
        raise LlmsimError(f"must be in (0, 1], got {target}", key="target")
    if seeds < 1:
        raise LlmsimError(f"must be >= 1, got {seeds}", key="seeds")
    if warmup < 0 or drain < 0 or warmup + drain >= 1:
        raise LlmsimError(
            f"warmup and drain must be >= 0 with warmup + drain < 1, got {warmup} and {drain}",
            key="warmup",
        )
    if not tol > 0:
        raise LlmsimError(f"must be > 0, got {tol}", key="tolerance")


@contextmanager
def _executor(jobs: int) -> Iterator[Executor | None]:
    check_jobs(jobs, "jobs")
    if jobs == 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool


def _run_all(pool: Executor | None, points: Sequence[_Point]) -> list[RunMetrics]:
    """Run the points, in order of the list whatever order they finish in."""
    if pool is None:
        return [_run_point(p) for p in points]
    return list(pool.map(_run_point, points))


def capacity(
    scenario: Scenario,
    target: float = 0.99,
    seeds: int = 3,
    warmup: float = 0.1,
    drain: float = 0.1,
    tolerance: float = 0.02,
    max_probes: int = 40,
    jobs: int = 1,
    loads: Sequence[float] = DEFAULT_LOADS,
    on_probe: Callable[[Probe], None] | None = None,
) -> CapacityResult:
    """The highest arrival rate at which mean attainment over `seeds` seeds stays at or
    above `target`, found by bracketing then bisection to a relative `tolerance`, with
    its confidence interval and, at `loads` × capacity, a throughput–latency curve.

    `max_probes` caps the loads tried by the search (not counting the curve); a search
    cut short says so in `note` and `converged`. `on_probe` sees each probe as it ends."""
    check_slo(scenario)
    _check_options(target, seeds, warmup, drain, tolerance)
    if max_probes < 2:
        raise LlmsimError(f"must be >= 2, got {max_probes}", key="max_probes")
    base = base_rate_rps(scenario)
    seed_list = tuple(scenario.seed + i for i in range(seeds))
    probes: list[Probe] = []

    with _executor(jobs) as pool:

        def probe(factor: float, phase: str) -> Probe:
            rate = base * factor
            points = [_Point(scenario, factor, rate, s, warmup, drain) for s in seed_list]
            p = Probe(factor, rate, tuple(_run_all(pool, points)), target, phase)
            probes.append(p)
            if on_probe is not None:
                on_probe(p)
            return p

        lo, hi, note = _bracket(probe, max_probes)
        while lo is not None and hi is not None and hi.factor / lo.factor - 1 > tolerance:
            if len(probes) >= max_probes:
                note = f"stopped after max_probes={max_probes} probes, before the tolerance"
                break
            mid = probe(math.sqrt(lo.factor * hi.factor), "bisect")
            if mid.passed:
                lo = mid
            else:
                hi = mid
        converged = lo is not None and hi is not None and not note
        if converged and lo is not None and hi is not None:
            _widen(probe, probes, lo, hi, tolerance)
        cap_factor = lo.factor if lo is not None else (hi.factor if hi is not None else 1.0)
        curve = _curve(pool, scenario, base, cap_factor, loads, seed_list, warmup, drain, target)

    interval = _interval(probes, lo, hi)
    first = probes[0].runs[0]
    return CapacityResult(
        scenario=scenario.name,
        target=target,
        seeds=seed_list,
        warmup=warmup,
        drain=drain,
        tolerance=tolerance,
        base_rate_rps=base,
        capacity_rps=lo.rate_rps if lo is not None else 0.0,
        interval_rps=interval,
        bracket_rps=(lo.rate_rps if lo else 0.0, hi.rate_rps if hi else None),
        converged=converged,
        note=note,
        at_capacity=lo,
        probes=tuple(probes),
        devices=first.devices,
        usd_per_hour=first.usd_per_hour,
        curve=curve,
    )


def _bracket(
    probe: Callable[[float, str], Probe], max_probes: int
) -> tuple[Probe | None, Probe | None, str]:
    """(highest pass, lowest fail, note): double from factor 1 while passing, halve
    while failing, until the two straddle the target or the limits are reached."""
    first = probe(1.0, "bracket")
    step = 2.0 if first.passed else 0.5
    last = first
    for i in range(1, MAX_DOUBLINGS + 1):
        if i + 1 > max_probes:
            break
        nxt = probe(last.factor * step, "bracket")
        if nxt.passed != first.passed:
            return (nxt, last, "") if nxt.passed else (last, nxt, "")
        last = nxt
    if first.passed:
        return last, None, f"every load passed up to {last.rate_rps:.4g} req/s: no upper bound"
    return None, last, f"no load passed down to {last.rate_rps:.4g} req/s: the SLO is out of reach"


def _widen(
    probe: Callable[[float, str], Probe],
    probes: Sequence[Probe],
    lo: Probe,
    hi: Probe,
    tolerance: float,
) -> None:
    """Probe outward from the bracket, in steps of tolerance × 1, 2, 4, ... (at most
    MAX_WIDEN a side): below `lo` until a probe passes with confidence, above `hi` until
    one fails with confidence, stopping short of a confident probe already run."""
    below = [p.factor for p in probes if p.confident_pass and p.factor <= lo.factor]
    floor = max(below, default=0.0)
    if floor < lo.factor:
        for i in range(MAX_WIDEN):
            factor = lo.factor / (1 + tolerance * 2**i)
            if factor <= floor or probe(factor, "interval").confident_pass:
                break
    above = [p.factor for p in probes if p.confident_fail and p.factor >= hi.factor]
    ceiling = min(above, default=math.inf)
    if ceiling > hi.factor:
        for i in range(MAX_WIDEN):
            factor = hi.factor * (1 + tolerance * 2**i)
            if factor >= ceiling or probe(factor, "interval").confident_fail:
                break


def _interval(
    probes: Sequence[Probe], lo: Probe | None, hi: Probe | None
) -> tuple[float, float | None]:
    """From the highest probe at or below the capacity that passed with confidence to
    the lowest at or above the first failing rate that failed with confidence (see the
    module docstring): the bisection bracket when the seeds agree."""
    if lo is None:
        lower = 0.0
    else:
        passes = [p.rate_rps for p in probes if p.confident_pass and p.factor <= lo.factor]
        lower = max(passes) if passes else 0.0
    if hi is None:
        upper = None
    else:
        fails = [p.rate_rps for p in probes if p.confident_fail and p.factor >= hi.factor]
        upper = min(fails) if fails else None
    return lower, upper


# ------------------------------------------------------------------------- curve


def _curve(
    pool: Executor | None,
    scenario: Scenario,
    base: float,
    cap_factor: float,
    loads: Sequence[float],
    seeds: Sequence[int],
    warmup: float,
    drain: float,
    target: float,
) -> pd.DataFrame:
    factors = [cap_factor * load for load in loads if load > 0]
    points = [_Point(scenario, f, base * f, s, warmup, drain) for f in factors for s in seeds]
    runs = _run_all(pool, points)
    k = len(seeds)
    probes = [
        Probe(f, base * f, tuple(runs[i * k : (i + 1) * k]), target) for i, f in enumerate(factors)
    ]
    return curve_frame(probes, [load for load in loads if load > 0])


def curve_frame(probes: Sequence[Probe], loads: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per load: offered rate, achieved throughput, goodput, attainment and
    p50/p99 TTFT and TPOT (means over seeds)."""
    rows = []
    for i, p in enumerate(probes):
        row: dict[str, Any] = {
            "load": loads[i] if loads is not None else p.factor,
            "offered_rps": p.rate_rps,
            "attainment": p.attainment,
        }
        row.update({name: p.mean(name) for name in CURVE_METRICS})
        rows.append(row)
    columns = ["load", "offered_rps", "attainment", *CURVE_METRICS]
    return pd.DataFrame(rows, columns=columns)


def latency_curve(
    scenario: Scenario,
    rates_rps: Sequence[float],
    seeds: int = 1,
    warmup: float = 0.1,
    drain: float = 0.1,
    jobs: int = 1,
) -> pd.DataFrame:
    """The throughput–latency curve at given offered rates, without a search; `load` is
    then the rate as a multiple of the scenario's own."""
    _check_options(0.5, seeds, warmup, drain, 1.0)
    base = base_rate_rps(scenario)
    seed_list = [scenario.seed + i for i in range(seeds)]
    factors = [r / base for r in rates_rps]
    with _executor(jobs) as pool:
        return _curve(pool, scenario, base, 1.0, factors, seed_list, warmup, drain, 1.0)


# -------------------------------------------------------------------------- plot


def plot_curve(
    curve: pd.DataFrame,
    slos: Sequence[SLOSpec],
    path: str | Path,
    *,
    capacity_rps: float | None = None,
    title: str = "",
) -> Path:
    """Two panels, TTFT and TPOT against offered load: p50 and p99, each SLO bound as a
    horizontal line and the capacity as a vertical one. Drawn on the Agg canvas."""
    from sim.results.plots import _figure

    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2, sharex=True)
    x = curve["offered_rps"].to_numpy(dtype=float)
    panels = (("TTFT", "ttft", "ttft_s"), ("TPOT", "tpot", "tpot_s"))
    for ax, (label, col, bound_attr) in zip(axes, panels, strict=True):
        drawn = False
        for q, style in (("p50", "o--"), ("p99", "s-")):
            y = pd.to_numeric(curve[f"{col}_{q}_s"], errors="coerce").to_numpy(dtype=float) * 1e3
            if np.isfinite(y).any():
                ax.plot(x, y, style, label=f"{label} {q}", markersize=4)
                drawn = True
        bounds = sorted({b for s in slos if (b := getattr(s, bound_attr)) is not None})
        for b in bounds:
            text = f"{b:g} s" if b >= 1 else f"{b * 1e3:g} ms"
            ax.axhline(b * 1e3, color="#b00020", linestyle=":", label=f"SLO {text}")
        if capacity_rps:
            ax.axvline(
                capacity_rps,
                color="#555555",
                linestyle="-.",
                linewidth=1,
                label=f"capacity {capacity_rps:.3g} req/s",
            )
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(f"{label} (ms)")
        if drawn:
            ys = curve[[f"{col}_p50_s", f"{col}_p99_s"]].to_numpy(dtype=float).ravel()
            ys = ys[np.isfinite(ys) & (ys > 0)]
            if ys.size and ys.max() / ys.min() > 50:
                ax.set_yscale("log")
        else:
            ax.text(
                0.5, 0.5, f"no {label} (one-token outputs)", transform=ax.transAxes, ha="center"
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{label} vs offered load", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def result_slos(scenario: Scenario) -> list[SLOSpec]:
    """The distinct SLOs the scenario's classes are held to (for the plot)."""
    seen: list[SLOSpec] = []
    for slo in class_slos(scenario).values():
        if slo not in seen:
            seen.append(slo)
    return seen
