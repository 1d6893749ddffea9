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
    Probe,
    _check_options,
    _curve,
    _Point,
    base_rate_rps,
    run_points,
)

DEFAULT_LOADS = (0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25)
MAX_DOUBLINGS = 24  # the bracket never leaves [2^-24, 2^24] × the scenario's rate
MAX_WIDEN = 6  # probes per side the interval may add beyond the bracket
STEADY_SHARE = 0.9  # completions below this share of arrivals: not at steady state


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

    with closing(bar), Pool(jobs) as pool:

        def probe(factor: float, phase: str) -> Probe:
            rate = base * factor
            bar.describe(desc=f"capacity: {phase}")
            points = [_Point(scenario, factor, rate, s, warmup, drain) for s in seed_list]
            p = Probe(factor, rate, tuple(run_points(pool, points, bar)), target, phase)
            probes.append(p)
            verdict = "pass" if p.passed else "fail"
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
            pool, scenario, base, cap_factor, loads, seed_list, warmup, drain, target, bar
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


def result_slos(scenario: Scenario) -> list[SLOSpec]:
    """The distinct SLOs the scenario's classes are held to (for the plot)."""
    seen: list[SLOSpec] = []
    for slo in class_slos(scenario).values():
        if slo not in seen:
            seen.append(slo)
    return seen
