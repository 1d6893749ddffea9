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
  * A capacity has to hold over time, not only for as long as a run lasts: each run is
    also judged for stability (sim.studies.probes: its queue grew through the window
    and left a backlog, or it was offered more than the maximum throughput), and an
    unstable run's attainment counts as 0 for its seed, whatever was measured.
  * The maximum throughput is measured first, by serving the scenario's requests all at
    once (a burst; a trace replayed a million times faster): completions per second
    while requests still queue (`probes.saturation`). A rate above it cannot hold, so
    the capacity is never above it (`CapacityResult.max_throughput_rps`).
  * Runs long enough to judge. The search sizes its runs (`size`: × the workload's
    `requests`, or `duration_s`; the rest of the workload as the user wrote it) so that
    each window holds at least MIN_WINDOW_REQUESTS arrivals and lasts at least
    MIN_WINDOW_SOJOURNS mean times in system at saturation (the burst's mean requests
    in service × 20), with a SIZE_MARGIN of 1.25 for the spread between seeds; never
    shorter than the scenario's own. When a probe would pass on its measured
    attainment but a run's window is still short (the queue held more than expected),
    it is run again at least twice as long, and later probes keep that length; runs
    stop growing at MAX_RUN_REQUESTS requests. A trace cannot be lengthened. When the
    runs at capacity are still too short to judge, `warnings` says so.
  * The throughput–latency curve runs the scenario at a list of loads (multiples of the
    capacity) and reports, per load, the offered rate, achieved throughput, goodput,
    attainment (as judged), the share of seeds judged unstable and the p50/p99 TTFT and
    TPOT of the window's finished requests, each the mean over the seeds, with runs as
    long as the search's last.

Assumptions
  * Attainment falls with load (within noise), so a bracket holds one crossing. Where it
    does not, bisection still returns a rate that passed next to one that failed.
  * Runs are deterministic (same seed, same results), so probes can run in worker
    processes (`jobs`) in any order and the result is the same as with `jobs=1`: seeds
    of one probe and the loads of the curve run in parallel; the probes of the search,
    each depending on the last (and on the run length the last one settled), run in
    turn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from sim.errors import LlmsimError
from sim.progress import Progress
from sim.results.slo import class_slos
from sim.results.table import json_safe
from sim.spec.scenario import Scenario
from sim.spec.slo import SLOSpec
from sim.studies.pool import Pool
from sim.studies.probes import (
    MIN_WINDOW_REQUESTS,
    MIN_WINDOW_SOJOURNS,
    Probe,
    _check_options,
    _curve,
    _Point,
    base_rate_rps,
    run_points,
    saturation,
)

DEFAULT_LOADS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)
MAX_DOUBLINGS = 24  # the bracket never leaves [2^-24, 2^24] × the scenario's rate
MAX_WIDEN = 6  # probes per side the interval may add beyond the bracket
STEADY_SHARE = 0.9  # completions below this share of arrivals: not at steady state
SIZE_MARGIN = 1.25  # runs sized for this many times the window the judgement needs
MAX_RUN_REQUESTS = 100_000  # the search lengthens runs up to this many requests


def check_slo(scenario: Scenario) -> None:
    """A capacity needs something to hold: the scenario's SLO or a class's own."""
    classes = scenario.workload.classes or ()
    if scenario.slo.empty and all(c.slo is None or c.slo.empty for c in classes):
        raise scenario.error(
            "capacity needs an SLO to hold: give slo: {ttft: ..., tpot: ..., e2e: ...} "
            "(or a class's own slo)",
            "slo",
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
    max_throughput_rps: float | None = None  # serving the requests all at once
    size: float = 1.0  # the runs' length at the end, × the scenario's workload
    trace: bool = False  # the workload replays a trace (its runs cannot be lengthened)

    @property
    def requests_per_run(self) -> float | None:
        """Requests in each run at capacity (the mean over seeds)."""
        return self.at_capacity.mean("requests") if self.at_capacity else None

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
        window lasts), and then attainment, and so the capacity, read high. Runs at
        capacity whose windows are too short to judge stability (sim.studies.probes)
        may hide a queue that grows; without a maximum throughput, no rate is ruled
        out as above it."""
        at = self.at_capacity
        out: list[str] = []
        done = at.mean("throughput_rps") if at is not None else None
        if at is not None and done is not None and done < STEADY_SHARE * at.rate_rps:
            out.append(
                f"at capacity the window completes {done:,.3g} req/s of the "
                f"{at.rate_rps:,.3g} offered ({done / at.rate_rps:.0%}): the runs may be "
                "too short to reach steady state; raise workload.requests (or "
                "workload.duration_s) and search again"
            )
        if at is not None and at.short_window:
            lasts = min(r.window_sojourns for r in at.runs)
            holds = min(r.window_requests for r in at.runs)
            fix = (
                "replay a longer trace"
                if self.trace
                else f"the search lengthens runs to {MAX_RUN_REQUESTS:,} requests at most"
            )
            out.append(
                f"at capacity a window lasts only {lasts:,.3g} mean times in system and "
                f"holds {holds:,} requests (stability is judged on >= "
                f"{MIN_WINDOW_SOJOURNS:g} and >= {MIN_WINDOW_REQUESTS}): too short to "
                f"tell whether the queue grows, so the capacity may not hold over time; "
                f"{fix}"
            )
        if self.max_throughput_rps is None:
            out.append(
                "the maximum throughput could not be measured (all the requests at once "
                "never queued): rates are judged by their queues alone"
            )
        return tuple(out)

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
            "max_throughput_rps": self.max_throughput_rps,
            "size": self.size,
            "requests_per_run": self.requests_per_run,
            "goodput_rps": self.goodput_rps,
            "devices": self.devices,
            "usd_per_hour": self.usd_per_hour,
            "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
            "at_capacity": at.to_dict() if at else None,
            "probes": [p.to_dict() for p in self.probes],
            "curve": json_safe(self.curve.to_dict(orient="records")),
        }


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
    progress: bool | None = False,
) -> CapacityResult:
    """The highest arrival rate at which mean attainment over `seeds` seeds stays at or
    above `target`, found by bracketing then bisection to a relative `tolerance`, with
    its confidence interval and, at `loads` × capacity, a throughput–latency curve.

    A run judged unstable (its queue grew through the window, or it was offered more
    than the maximum throughput, measured first from the requests all at once) counts
    as attainment 0 for its seed; runs are lengthened until their windows are long
    enough to judge (see the module docstring).

    `max_probes` caps the loads tried by the search (not counting the curve); a search
    cut short says so in `note` and `converged`. `on_probe` sees each probe as it ends.
    `progress` draws a bar (None: on a terminal only) counting the runs (the search's
    length is not known in advance), with the phase running and the last probe's
    verdict beside the count."""
    check_slo(scenario)
    _check_options(target, seeds, warmup, drain, tolerance)
    if max_probes < 2:
        raise LlmsimError(f"must be >= 2, got {max_probes}", key="max_probes")
    base = base_rate_rps(scenario)
    seed_list = tuple(scenario.seed + i for i in range(seeds))
    probes: list[Probe] = []
    bar = Progress(None, "capacity", "run", progress)
    kept = 1.0 - warmup - drain  # the share of a run's arrivals in its window
    per_size = _requests_per_size(scenario, base)

    with closing(bar), Pool(jobs) as pool:
        # The maximum throughput, and from the concurrency it runs at, the runs' length.
        bar.describe(desc="capacity: max throughput")
        size = 1.0
        if per_size is not None:
            size = _longer(per_size, size, MIN_WINDOW_REQUESTS / (kept * per_size), 1.0)
        sat = saturation(scenario, size, warmup)
        bar.advance()
        if per_size is not None:
            need = MIN_WINDOW_SOJOURNS * sat.in_service / (kept * per_size * size)
            if (longer := _longer(per_size, size, need, 1.0)) > size:
                size = longer
                sat = saturation(scenario, size, warmup)
                bar.advance()
        max_rps = sat.throughput_rps

        def probe(factor: float, phase: str) -> Probe:
            nonlocal size
            rate = base * factor
            bar.describe(desc=f"capacity: {phase}")
            while True:
                points = [
                    _Point(scenario, factor, rate, s, warmup, drain, size, max_rps)
                    for s in seed_list
                ]
                p = Probe(factor, rate, tuple(run_points(pool, points, bar)), target, phase, size)
                # Passing as measured on a window too short to judge: run it longer.
                measured = sum(p.measured_attainments) / len(p.runs)
                if measured < target or not p.short_window:
                    break
                longer = _longer(per_size, size, max(r.length_needed for r in p.runs), 2.0)
                if longer <= size:
                    break
                size = longer
            probes.append(p)
            verdict = "pass" if p.passed else "fail"
            if p.unstable_seeds:
                verdict += f", {len(p.unstable_seeds)} unstable"
            bar.describe(postfix=f"{rate:,.4g} req/s {verdict} ({p.attainment:.3f})")
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
        curve = _curve(
            pool,
            scenario,
            base,
            cap_factor,
            loads,
            seed_list,
            warmup,
            drain,
            target,
            bar,
            size,
            max_rps,
        )

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
        max_throughput_rps=max_rps,
        size=size,
        trace=scenario.workload.trace is not None,
    )


def _requests_per_size(scenario: Scenario, base: float) -> float | None:
    """Requests in a run at the scenario's own rate per unit of `size`: its requests,
    or its rate × duration_s; None for a trace (it cannot be lengthened)."""
    wl = scenario.workload
    if wl.trace is not None:
        return None
    if wl.requests is not None:
        return float(wl.requests)
    assert wl.duration_s is not None
    return base * wl.duration_s


def _longer(per_size: float | None, size: float, need: float, least: float) -> float:
    """The size of runs `need` times as long as at `size` with SIZE_MARGIN to spare, and
    at least `least` times as long; `size` itself when that margin is met already (or
    for a trace); at most MAX_RUN_REQUESTS requests (at the scenario's own rate)."""
    if per_size is None or need * SIZE_MARGIN <= 1:
        return size
    cap = max(size, MAX_RUN_REQUESTS / per_size)
    return min(cap, size * max(least, need * SIZE_MARGIN))


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


def result_slos(scenario: Scenario) -> list[SLOSpec]:
    """The distinct SLOs the scenario's classes are held to (for the plot)."""
    seen: list[SLOSpec] = []
    for slo in class_slos(scenario).values():
        if slo not in seen:
            seen.append(slo)
    return seen
