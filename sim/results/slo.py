"""Latencies of a run's requests and what the SLOs make of them, in one place.

Per finished request: TTFT = first token − arrival; TPOT = (finish − first token) /
(output tokens − 1), for requests with more than one output token; end-to-end =
finish − arrival; queueing = first scheduled − arrival. A request *meets* its SLOs when
each of its latencies is within its class's bounds (the class's own SLO, else the
scenario's); a set of requests *attains* them in the share that meets them, and a
bound *holds* when the SLO's percentile of that latency is within it. Percentiles are
numpy's (linear interpolation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.spec.scenario import Scenario
from sim.spec.slo import SLOSpec

PERCENTILES = (50, 90, 99)
BOUNDS = ("ttft_s", "tpot_s", "e2e_s")


def latency_columns(requests: pd.DataFrame) -> pd.DataFrame:
    """TTFT, TPOT, end-to-end and queueing seconds of finished requests."""
    done = requests[requests["status"] == "finished"]
    out = pd.DataFrame(index=done.index)
    out["class"] = done["class"]
    out["ttft_s"] = done["first_token_s"] - done["arrival_s"]
    decode_tokens = done["output_tokens"] - 1
    out["tpot_s"] = (done["finish_s"] - done["first_token_s"]) / decode_tokens.where(
        decode_tokens > 0
    )
    out["e2e_s"] = done["finish_s"] - done["arrival_s"]
    out["queue_s"] = done["scheduled_s"] - done["arrival_s"]
    out["output_tokens"] = done["output_tokens"]
    out["prompt_tokens"] = done["prompt_tokens"]
    return out


def quantiles(values: pd.Series, qs: tuple[float, ...]) -> tuple[float | None, ...]:
    """The `qs` percentiles of the values that are not missing (None when none are)."""
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return tuple(None for _ in qs)
    return tuple(float(x) for x in np.percentile(v, qs))


@dataclass(frozen=True)
class LatencyStats:
    """Mean and percentiles of one latency, in seconds (None when nothing finished)."""

    mean: float | None
    p50: float | None
    p90: float | None
    p99: float | None

    @staticmethod
    def of(values: pd.Series) -> LatencyStats:
        v = values.dropna().to_numpy(dtype=float)
        if v.size == 0:
            return LatencyStats(None, None, None, None)
        p50, p90, p99 = (float(x) for x in np.percentile(v, PERCENTILES))
        return LatencyStats(float(v.mean()), p50, p90, p99)

    def to_dict(self) -> dict[str, float | None]:
        return {"mean": self.mean, "p50": self.p50, "p90": self.p90, "p99": self.p99}


def meets_slo(lat: pd.DataFrame, slo: SLOSpec) -> pd.Series:
    """Per finished request: does it meet every bound of `slo`?"""
    ok = pd.Series(True, index=lat.index)
    if slo.ttft_s is not None:
        ok &= lat["ttft_s"] <= slo.ttft_s
    if slo.tpot_s is not None:
        ok &= lat["tpot_s"].fillna(0.0) <= slo.tpot_s
    if slo.e2e_s is not None:
        ok &= lat["e2e_s"] <= slo.e2e_s
    return ok


def class_slos(scenario: Scenario) -> dict[str, SLOSpec]:
    """Each class's SLO: its own, else the scenario's."""
    wl = scenario.workload
    return {name: wl.slo_for(name) or scenario.slo for name in wl.class_names}


def meets_class_slos(requests: pd.DataFrame, scenario: Scenario) -> np.ndarray:
    """Per request (finished or not): did it finish within its class's SLOs?"""
    lat = latency_columns(requests)
    met = pd.Series(False, index=requests.index)
    classes = lat["class"].astype(str)
    for name, slo in class_slos(scenario).items():
        rows = lat[classes == name]
        met.loc[rows.index] = meets_slo(rows, slo).to_numpy()
    return met.to_numpy(dtype=bool)


@dataclass(frozen=True)
class BoundReport:
    at_percentile: float | None  # the SLO's percentile of the latency
    bound: float
    holds: bool


@dataclass(frozen=True)
class SLOReport:
    """Attainment (share of all requests that finished within every bound), goodput,
    and whether each bound holds at the SLO's percentile. Empty without an SLO."""

    attainment: float | None = None
    goodput_rps: float | None = None
    percentile: float | None = None
    bounds: dict[str, BoundReport] | None = None

    @staticmethod
    def of(lat: pd.DataFrame, slo: SLOSpec, total: int, span_s: float) -> SLOReport:
        if slo.empty:
            return SLOReport()
        met = int(meets_slo(lat, slo).sum())
        bounds = {}
        for key in BOUNDS:
            bound = getattr(slo, key)
            if bound is None:
                continue
            (at,) = quantiles(lat[key], (slo.percentile,))
            bounds[key] = BoundReport(at, bound, bool(at is not None and at <= bound))
        return SLOReport(
            met / total if total else None,
            met / span_s if span_s > 0 else None,
            slo.percentile,
            bounds,
        )

    @property
    def empty(self) -> bool:
        return self.bounds is None

    def to_dict(self) -> dict[str, Any]:
        if self.bounds is None:
            return {}
        out: dict[str, Any] = {
            "attainment": self.attainment,
            "goodput_rps": self.goodput_rps,
            "percentile": self.percentile,
        }
        for key, b in self.bounds.items():
            out[f"{key}_at_percentile"] = b.at_percentile
            out[f"{key}_bound"] = b.bound
            out[f"{key}_holds"] = b.holds
        return out
