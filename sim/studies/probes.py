"""One load of a capacity search: its runs (one per seed), judged in a measurement
window, and their means; and the throughput–latency curve made of such loads.

See sim.studies.capacity for what the window is and how attainment, throughput and
goodput are counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from sim.errors import LlmsimError
from sim.progress import Progress
from sim.results.run import Results, simulate
from sim.results.slo import latency_columns, meets_class_slos, quantiles
from sim.spec.scenario import Scenario
from sim.studies.pool import Pool
from sim.workload.arrivals import generate

CONFIDENCE = 0.95


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
    met_np = meets_class_slos(req, scenario)
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
    ttft = quantiles(cohort["ttft_s"], (50, 99))
    tpot = quantiles(cohort["tpot_s"], (50, 99))
    cost = results.summary.cost
    per_hour = cost.usd_per_hour
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
        devices=cost.devices,
        usd_per_hour=per_hour,
        usd_per_million_output_tokens=per_million,
        wall_s=results.wall_s,
    )


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
    s = point.scenario
    scaled = s.model_copy(update={"workload": s.workload.scaled(point.factor), "seed": point.seed})
    results = simulate(scaled, records=False)
    return run_metrics(results, point.rate_rps, point.warmup, point.drain)


def run_points(
    pool: Pool, points: Sequence[_Point], bar: Progress | None = None
) -> list[RunMetrics]:
    """Every point's run, in the points' order; `bar` moves on as each run ends."""
    runs: list[RunMetrics | None] = [None] * len(points)
    for i, metrics in pool.as_completed(_run_point, points):
        runs[i] = metrics
        if bar is not None:
            bar.advance()
    return [r for r in runs if r is not None]


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
        return float(student_t.ppf(0.5 + CONFIDENCE / 2, k - 1)) * self.attainment_se

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


def _curve(
    pool: Pool,
    scenario: Scenario,
    base: float,
    cap_factor: float,
    loads: Sequence[float],
    seeds: Sequence[int],
    warmup: float,
    drain: float,
    target: float,
    bar: Progress | None = None,
) -> pd.DataFrame:
    factors = [cap_factor * load for load in loads if load > 0]
    points = [_Point(scenario, f, base * f, s, warmup, drain) for f in factors for s in seeds]
    if bar is not None and points:
        bar.describe(desc="capacity: curve")
    runs = run_points(pool, points, bar)
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


def base_rate_rps(scenario: Scenario) -> float:
    """The scenario's own offered rate: its arrival process's mean rate, or for a trace
    the replayed requests over their arrival span."""
    wl = scenario.workload
    rate = wl.mean_rate_per_s
    if rate is not None:
        return float(rate)
    if wl.trace is None:
        raise scenario.error("a burst has no rate to search over", "workload.arrival")
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
    with Pool(jobs) as pool:
        return _curve(pool, scenario, base, 1.0, factors, seed_list, warmup, drain, 1.0)
