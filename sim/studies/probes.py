"""One load of a capacity search: its runs (one per seed), judged in a measurement
window, and their means; and the throughput–latency curve made of such loads.

See sim.studies.capacity for what the window is and how attainment, throughput and
goodput are counted.

Stability: does the load hold over time?
  A run that ends before its queue has grown enough to break the SLO looks fine, and
  the drain trim removes the late arrivals that saw the longest queue; run longer, the
  same load fails. So each run is also judged on whether its queue is stationary over
  the window [lo, hi] (`judge`), from the number in system N(t): requests arrived and
  neither finished nor rejected.
  * Growth. m1 and m3 are the time averages of N over the first and the last third of
    the window, v1 and v3 its time variances there, s = √((v1 + v3)/2) the pooled
    within-third standard deviation, and `growth_sds` = (m3 − m1)/s. A stable queue's
    N is stationary: the means of two stretches each many correlation times long agree
    to a small fraction of s, and even when N's fluctuations last as long as a third
    of the window their difference seldom reaches 2s. An overloaded queue grows
    linearly: by g a third on a fluctuation σ, m3 − m1 = 2g and s² = g²/12 + σ², so
    (m3 − m1)/s passes GROWTH_SDS = 2 once g > 1.04σ, that is, once the queue grows by
    more over a third of the window than it fluctuates (a queue with a constant service
    time, offered 1.01 × its service rate, shows 4.7 in a window of 400 requests).
  * Backlog. B is the number of the window's arrivals still in the system at its end,
    X the requests completed per second in the window and W the mean time in system of
    the window's finished requests. B/X (`backlog_s`) is the time the system, at the
    rate it kept up in the window, needs to finish the work the window leaves behind;
    in steady state that is about W (Little's law: the number in system is X·W). A
    backlog that lasts longer than W is more than a steady state leaves.
  * Above saturation. A queue offered more than the deployment's maximum throughput is
    unstable whatever a finite run shows (ρ > 1); the capacity search measures that
    maximum by serving the same requests all at once (`saturation`) and passes it as
    `max_rps`.
  A run is unstable when its queue grew and left a backlog (both), or when it was
  offered more than `max_rps`. `RunMetrics.instability` says why ("" when stable), and
  a probe counts an unstable seed's attainment as 0, whatever was measured.

Window length. Both tests need a window that is long against how long requests stay:
by Little's law the window lasts A/N̄ mean times in system (A its arrivals, N̄ the mean
number in system), and a window is `short_window` with fewer than MIN_WINDOW_SOJOURNS =
20 of them (a 10% warm-up then lasts about 2.5 of them, enough for the cluster to fill,
and each third about 7) or fewer than MIN_WINDOW_REQUESTS = 400 requests (arrivals in
excess of the service rate by a quarter of a percent then add a request to the queue).
The capacity search sizes its runs to meet both (sim.studies.capacity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from sim.errors import LlmsimError
from sim.progress import Progress
from sim.results.run import Results, simulate
from sim.results.slo import latency_columns, meets_class_slos, quantiles
from sim.spec.scenario import Scenario
from sim.spec.workload import MAX_REQUESTS, BurstArrivals, WorkloadSpec
from sim.studies.pool import Pool
from sim.workload.arrivals import generate

CONFIDENCE = 0.95
GROWTH_SDS = 2.0  # last third's mean number in system above the first's, in pooled sds
MIN_WINDOW_SOJOURNS = 20.0  # a window lasts at least this many mean times in system
MIN_WINDOW_REQUESTS = 400  # and holds at least this many arrivals
TRACE_SPEEDUP = 1e6  # a trace replayed this much faster arrives all at once


@dataclass(frozen=True)
class RunMetrics:
    """What one run (one load, one seed) gave inside its measurement window."""

    rate_rps: float  # offered
    seed: int
    window_requests: int
    attainment: float  # as measured, stable or not
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
    requests: int = 0  # in the run
    in_system: float = 0.0  # mean number in system over the window
    growth_sds: float = 0.0  # (last third's mean - first third's) / pooled sd
    backlog_s: float = 0.0  # window arrivals unfinished at its end / completions per s
    sojourn_s: float | None = None  # mean time in system of the window's finished
    instability: str = ""  # why the run is judged unstable; "" when stable

    @property
    def stable(self) -> bool:
        return not self.instability

    @property
    def judged_attainment(self) -> float:
        """The attainment a probe counts: 0 for an unstable run."""
        return self.attainment if self.stable else 0.0

    @property
    def window_sojourns(self) -> float:
        """How many mean times in system the window lasts (Little's law: A / N̄)."""
        return self.window_requests / self.in_system if self.in_system > 0 else math.inf

    @property
    def short_window(self) -> bool:
        """Too short to judge stability (see the module docstring)."""
        return (
            self.window_requests < MIN_WINDOW_REQUESTS or self.window_sojourns < MIN_WINDOW_SOJOURNS
        )

    @property
    def length_needed(self) -> float:
        """How many times longer the run should be for its window not to be short."""
        a = max(self.window_requests, 1)
        return max(MIN_WINDOW_REQUESTS / a, MIN_WINDOW_SOJOURNS * self.in_system / a)


def window_bounds(arrival_s: np.ndarray, warmup: float, drain: float) -> tuple[float, float]:
    """[lo, hi] of arrival times: the span less its first `warmup` and last `drain`."""
    t0, t1 = float(arrival_s.min()), float(arrival_s.max())
    span = t1 - t0
    return t0 + warmup * span, t1 - drain * span


def leave_times(req: pd.DataFrame) -> np.ndarray:
    """When each request left the system: its finish, its arrival if it was rejected
    (it never entered), never (inf) if it had not finished when the run ended."""
    status = req["status"].to_numpy()
    arrival = req["arrival_s"].to_numpy(dtype=float)
    finish = req["finish_s"].to_numpy(dtype=float)
    return np.where(status == "finished", finish, np.where(status == "rejected", arrival, np.inf))


def occupancy(
    enter: np.ndarray, leave: np.ndarray, edges: Sequence[float]
) -> list[tuple[float, float]]:
    """(time average, time variance) of the number in system, entries at `enter` and
    exits at `leave` (inf: never), over each interval between consecutive `edges`."""
    times = np.concatenate([enter, leave])
    steps = np.concatenate([np.ones(len(enter)), -np.ones(len(leave))])
    keep = np.isfinite(times)
    order = np.argsort(times[keep], kind="stable")
    times = times[keep][order]
    level = np.cumsum(steps[keep][order])  # the number in system just after times[i]
    gaps = np.diff(times)
    first = np.concatenate([[0.0], np.cumsum(level[:-1] * gaps)])  # ∫ N from times[0]
    second = np.concatenate([[0.0], np.cumsum(level[:-1] ** 2 * gaps)])  # ∫ N²

    def integrals(x: float) -> tuple[float, float]:
        k = int(np.searchsorted(times, x, side="right")) - 1
        if k < 0:
            return 0.0, 0.0
        dx = x - times[k]
        return first[k] + level[k] * dx, second[k] + level[k] ** 2 * dx

    out = []
    for a, b in pairwise(edges):
        (f0, s0), (f1, s1) = integrals(a), integrals(b)
        mean = (f1 - f0) / (b - a)
        out.append((float(mean), float(max((s1 - s0) / (b - a) - mean**2, 0.0))))
    return out


@dataclass(frozen=True)
class Judgement:
    """The stability of one run's window (see the module docstring)."""

    in_system: float
    growth_sds: float
    backlog_s: float
    sojourn_s: float | None
    instability: str


def judge(
    req: pd.DataFrame, lo: float, hi: float, rate_rps: float, max_rps: float | None = None
) -> Judgement:
    """Whether the queue in the window [lo, hi] holds over time: it grew (its last
    third holds more than GROWTH_SDS pooled standard deviations above its first) and
    left a backlog (the window's unfinished arrivals at `hi` take longer to complete at
    the window's completion rate than a request's mean time in system); or the rate
    offered is above the maximum throughput `max_rps` (when known)."""
    arrival = req["arrival_s"].to_numpy(dtype=float)
    leave = leave_times(req)
    seconds = hi - lo
    edges = [lo, lo + seconds / 3, hi - seconds / 3, hi]
    (m1, v1), _, (m3, v3) = occupancy(arrival, leave, edges)
    ((in_system, _),) = occupancy(arrival, leave, [lo, hi])
    spread = math.sqrt((v1 + v3) / 2)
    diff = m3 - m1
    growth = diff / spread if spread > 0 else (math.inf if diff > 0 else 0.0)

    finished = (req["status"] == "finished").to_numpy()
    in_window = (arrival >= lo) & (arrival <= hi)
    backlog = int((in_window & (leave > hi)).sum())
    done_per_s = float((finished & (leave >= lo) & (leave <= hi)).sum()) / seconds
    backlog_s = backlog / done_per_s if done_per_s > 0 else (math.inf if backlog else 0.0)
    stay = (leave - arrival)[in_window & finished]
    sojourn = float(stay.mean()) if stay.size else None

    why = ""
    if max_rps is not None and rate_rps > max_rps:
        why = f"offered {rate_rps:,.4g} req/s, above the maximum throughput {max_rps:,.4g}"
    elif growth > GROWTH_SDS and (sojourn is None or backlog_s > sojourn):
        why = (
            f"queue grew: {m1:,.4g} -> {m3:,.4g} in system ({growth:.1f} sd), leaving "
            f"{backlog_s:,.3g} s of backlog"
            + (f" (mean time in system {sojourn:,.3g} s)" if sojourn is not None else "")
        )
    return Judgement(in_system, growth, backlog_s, sojourn, why)


def run_metrics(
    results: Results,
    rate_rps: float,
    warmup: float,
    drain: float,
    max_rps: float | None = None,
) -> RunMetrics:
    """Attainment, throughput, goodput and latency percentiles of a run's window, and
    its stability (see the module docstring for what the window is, how each is
    counted and how stability is judged; `max_rps`: the deployment's maximum
    throughput, when known)."""
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
    verdict = judge(req, lo, hi, rate_rps, max_rps)
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
        requests=len(req),
        in_system=verdict.in_system,
        growth_sds=verdict.growth_sds,
        backlog_s=verdict.backlog_s,
        sojourn_s=verdict.sojourn_s,
        instability=verdict.instability,
    )


def sized(workload: WorkloadSpec, size: float) -> WorkloadSpec:
    """The workload `size` times as long: its requests (or duration_s) scaled up, all
    else as it is. A trace replays as it is (its requests are what it holds)."""
    if size == 1 or workload.trace is not None:
        return workload
    if workload.requests is not None:
        n = min(MAX_REQUESTS, math.ceil(workload.requests * size))
        return workload.model_copy(update={"requests": n})
    assert workload.duration_s is not None
    return workload.model_copy(update={"duration_s": workload.duration_s * size})


def all_at_once(scenario: Scenario, workload: WorkloadSpec) -> WorkloadSpec:
    """The same requests (lengths and classes: their draws do not depend on the
    arrivals) arriving all at once: a burst of as many; a trace replayed
    TRACE_SPEEDUP times faster."""
    if workload.trace is not None:
        return workload.scaled(TRACE_SPEEDUP)
    n = workload.requests
    if n is None:
        n = len(generate(workload, scenario.seed, scenario.base_dir))
    return workload.model_copy(
        update={"arrival": BurstArrivals(process="burst"), "requests": n, "duration_s": None}
    )


@dataclass(frozen=True)
class Saturation:
    """The deployment serving a workload's requests all at once."""

    requests: int
    throughput_rps: float | None  # completions per second while requests queue
    in_service: float  # mean requests in service meanwhile


def saturation(scenario: Scenario, size: float, warmup: float) -> Saturation:
    """Serve the scenario's requests (its workload `size` times as long) all at once.
    The deployment's maximum throughput is its completions per second while requests
    still queue: from `warmup` of that time on (the cluster filling up) until the last
    request is first scheduled, the completions after the first one per second from it
    to the last. None when the queue empties at once (every request fits in one batch:
    the burst never saturates the deployment)."""
    workload = all_at_once(scenario, sized(scenario.workload, size))
    results = simulate(scenario.model_copy(update={"workload": workload}), records=False)
    req = results.requests
    arrival = req["arrival_s"].to_numpy(dtype=float)
    scheduled = req["scheduled_s"].to_numpy(dtype=float)
    finish = leave_times(req)
    t0 = float(arrival.min()) if len(req) else 0.0
    queued_until = float(np.nanmax(scheduled)) if np.isfinite(scheduled).any() else t0
    lo = t0 + warmup * (queued_until - t0)
    if not queued_until > lo:
        return Saturation(len(req), None, 0.0)
    finished = (req["status"] == "finished").to_numpy()
    done = np.sort(finish[finished & (finish > lo) & (finish <= queued_until)])
    ((in_service, _),) = occupancy(
        scheduled[np.isfinite(scheduled)], finish[np.isfinite(scheduled)], [lo, queued_until]
    )
    # completions after the first one, per second from it to the last (no partial gap
    # at either end, whether requests complete one by one or a batch at a time)
    span = float(done[-1] - done[0]) if len(done) else 0.0
    rps = float((done > done[0]).sum()) / span if span > 0 else None
    return Saturation(len(req), rps, in_service)


@dataclass(frozen=True)
class _Point:
    """One run to do: the scenario at `factor` × its rate, with `seed`, its workload
    `size` times as long; `max_rps` the deployment's maximum throughput (if known)."""

    scenario: Scenario
    factor: float
    rate_rps: float
    seed: int
    warmup: float
    drain: float
    size: float = 1.0
    max_rps: float | None = None


def _run_point(point: _Point) -> RunMetrics:
    """Simulate one point (module level: it runs in a worker process)."""
    s = point.scenario
    workload = sized(s.workload.scaled(point.factor), point.size)
    scaled = s.model_copy(update={"workload": workload, "seed": point.seed})
    results = simulate(scaled, records=False)
    return run_metrics(results, point.rate_rps, point.warmup, point.drain, point.max_rps)


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
    """One load tried by the search (or the curve): every seed's run and their means.
    Attainment is as judged: an unstable run's counts as 0."""

    factor: float  # × the scenario's rate
    rate_rps: float
    runs: tuple[RunMetrics, ...]
    target: float
    phase: str = "curve"  # bracket | bisect | interval | curve
    size: float = 1.0  # × the scenario's workload length

    @property
    def attainments(self) -> tuple[float, ...]:
        return tuple(r.judged_attainment for r in self.runs)

    @property
    def measured_attainments(self) -> tuple[float, ...]:
        return tuple(r.attainment for r in self.runs)

    @property
    def unstable_seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs if not r.stable)

    @property
    def short_window(self) -> bool:
        return any(r.short_window for r in self.runs)

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
            "measured_attainments": list(self.measured_attainments),
            "unstable_seeds": list(self.unstable_seeds),
            "instability": [r.instability for r in self.runs],
            "passed": self.passed,
            "confident": self.confident_pass or self.confident_fail,
            "size": self.size,
            "requests": [r.requests for r in self.runs],
            "window_sojourns": [
                w if math.isfinite(w) else None for w in (r.window_sojourns for r in self.runs)
            ],
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
    size: float = 1.0,
    max_rps: float | None = None,
) -> pd.DataFrame:
    factors = [cap_factor * load for load in loads if load > 0]
    points = [
        _Point(scenario, f, base * f, s, warmup, drain, size, max_rps)
        for f in factors
        for s in seeds
    ]
    if bar is not None and points:
        bar.describe(desc="capacity: curve")
    runs = run_points(pool, points, bar)
    k = len(seeds)
    probes = [
        Probe(f, base * f, tuple(runs[i * k : (i + 1) * k]), target, size=size)
        for i, f in enumerate(factors)
    ]
    return curve_frame(probes, [load for load in loads if load > 0])


def curve_frame(probes: Sequence[Probe], loads: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per load: offered rate, achieved throughput, goodput, attainment (as
    judged: an unstable seed's counts as 0), the share of seeds judged unstable, and
    p50/p99 TTFT and TPOT (means over seeds)."""
    rows = []
    for i, p in enumerate(probes):
        row: dict[str, Any] = {
            "load": loads[i] if loads is not None else p.factor,
            "offered_rps": p.rate_rps,
            "attainment": p.attainment,
            "unstable": len(p.unstable_seeds) / len(p.runs) if p.runs else 0.0,
        }
        row.update({name: p.mean(name) for name in CURVE_METRICS})
        rows.append(row)
    columns = ["load", "offered_rps", "attainment", "unstable", *CURVE_METRICS]
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
    then the rate as a multiple of the scenario's own. The runs are the scenario's
    workload as it is (not sized up), each judged for stability by its queue alone
    (the maximum throughput is not measured)."""
    _check_options(0.5, seeds, warmup, drain, 1.0)
    base = base_rate_rps(scenario)
    seed_list = [scenario.seed + i for i in range(seeds)]
    factors = [r / base for r in rates_rps]
    with Pool(jobs) as pool:
        return _curve(pool, scenario, base, 1.0, factors, seed_list, warmup, drain, 1.0)
