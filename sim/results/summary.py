"""The summary of a run: a typed record computed from the run's records alone.

Throughput counts finished requests over the simulated span (first arrival to last
event). MFU is the model's useful FLOPs (real tokens, each computed once) over (span ×
peak FLOP/s), averaged over the devices in use; HFU counts every FLOP the devices ran,
padding and recomputation after preemption included; bandwidth utilisation is HBM
bytes over span × bandwidth. KV utilisation is the time-weighted share
of KV blocks in use, averaged over engines. The bubble fraction is the share of stage
time left idle while a replica had a step in flight. Energy sums the devices' energy over
the simulated time (sim.results.energy: idle power throughout, up to the TDP while busy),
per finished request and per output token. Latencies and SLOs: sim.results.slo.

`Summary.to_dict()` is what `summary.json` holds; `Summary.metric("ttft_s.p99")` reads
one figure by its dotted name (the columns of compare, capacity and sweep tables).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from sim.engine.records import FINISHED, RunRecords
from sim.results.slo import LatencyStats, SLOReport, latency_columns


@dataclass(frozen=True)
class CostSummary:
    """What the devices in use cost per hour and per million output tokens, at the
    catalog's indicative hourly prices (None when a device has no price)."""

    devices: int
    usd_per_hour: float | None
    usd_per_million_output_tokens: float | None


@dataclass(frozen=True)
class EnergySummary:
    """What the devices in use drew over the simulated time (sim.results.energy), in
    joules, and per finished request and output token; None where a device has no power
    in the catalog (`devices_without_power` names them)."""

    joules: float | None
    watts_mean: float | None
    joules_per_request: float | None
    joules_per_output_token: float | None
    devices_without_power: list[str]


@dataclass(frozen=True)
class ClassSummary:
    requests: int
    finished: int
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    slo: SLOReport


@dataclass(frozen=True)
class KVTransferSummary:
    transfers: int
    bytes: float
    mode: str


@dataclass(frozen=True)
class PrefixCacheSummary:
    """Prefix caching over the finished requests, first admissions only (a prompt
    recomputed after a preemption is not counted again): the share of prompt tokens
    found cached, the share of requests that found any, and the prompt tokens cached
    and computed."""

    hit_rate_tokens: float
    hit_rate_requests: float
    cached_prefill_tokens: int
    computed_prefill_tokens: int
    # tiered KV (scheduler.kv_tiers), per tier (host, disk): capacity_bytes, peak_bytes,
    # hit_blocks, hit_tokens (reloaded instead of recomputed), written_bytes (evictions
    # copied in), reload_bytes, reload_s (summed over reloads, link waits included)
    tiers: dict[str, dict[str, float]] | None = None

    @classmethod
    def of(cls, run: RunRecords) -> PrefixCacheSummary:
        rec = run.recorder
        done = rec.status == FINISHED
        cached = rec.cached_tokens[done]
        prompt = run.arrivals.prompt_tokens[done]
        total = int(prompt.sum())
        hit = int(cached.sum())
        n = int(done.sum())
        return cls(
            hit_rate_tokens=hit / total if total else 0.0,
            hit_rate_requests=float((cached > 0).sum()) / n if n else 0.0,
            cached_prefill_tokens=hit,
            computed_prefill_tokens=total - hit,
            tiers=run.kv_tiers,
        )


def sessions_frame(requests: pd.DataFrame) -> pd.DataFrame:
    """One row per session of a multi-turn workload (requests with `session_id`): its
    turns, those finished, its start (first turn's arrival), its end (last turn's
    finish; NaN unless every turn finished) and duration."""
    g = requests.groupby("session_id", sort=True)
    out = pd.DataFrame(
        {
            "turns": g.size(),
            "finished_turns": g["status"].agg(lambda s: int((s == "finished").sum())),
            "start_s": g["arrival_s"].min(),
            "end_s": g["finish_s"].max(),
        }
    )
    out.loc[out["finished_turns"] < out["turns"], "end_s"] = np.nan
    out["duration_s"] = out["end_s"] - out["start_s"]
    return out.reset_index()


@dataclass(frozen=True)
class SessionSummary:
    """Multi-turn sessions: how many started and finished every turn, turns per
    session, session duration (first arrival to last finish, finished sessions), and
    TTFT of first turns and of follow-up turns (which carry the history)."""

    sessions: int
    finished: int
    turns_mean: float
    duration_s: LatencyStats
    first_turn_ttft_s: LatencyStats
    follow_up_ttft_s: LatencyStats

    @classmethod
    def of(cls, requests: pd.DataFrame) -> SessionSummary:
        per = sessions_frame(requests)
        done = requests[requests["status"] == "finished"]
        ttft = done["first_token_s"] - done["arrival_s"]
        first = done["turn"] == 0
        return cls(
            sessions=len(per),
            finished=int(per["duration_s"].notna().sum()),
            turns_mean=float(per["turns"].mean()) if len(per) else 0.0,
            duration_s=LatencyStats.of(per["duration_s"]),
            first_turn_ttft_s=LatencyStats.of(ttft[first]),
            follow_up_ttft_s=LatencyStats.of(ttft[~first]),
        )


@dataclass(frozen=True)
class Summary:
    scenario: str
    seed: int
    requests: int
    finished: int
    rejected: int
    unfinished: int
    sim_time_s: float
    span_s: float
    throughput_rps: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None
    ttft_s: LatencyStats
    tpot_s: LatencyStats
    e2e_s: LatencyStats
    queue_s: LatencyStats
    preemptions: int
    mfu: float  # model FLOPs: the useful ones
    hfu: float  # hardware FLOPs: padding and recomputation included
    mbu: float
    kv_utilization: float
    kv_utilization_peak: float
    device_utilization: float
    iterations: int
    reject_reasons: dict[str, int]  # by category, only when some were rejected
    slo: SLOReport
    classes: dict[str, ClassSummary] | None  # per class, when there are several
    bubble_fraction: float
    stage_utilization: list[float]
    memory_bytes_per_device_peak: float
    link_utilization_max: float
    cost: CostSummary
    energy: EnergySummary
    kv_transfer: KVTransferSummary | None = None
    # speculative decoding: tokens per verification step, bonus token included (the
    # expectation 1 + Σ_i Π_{j≤i} a_j, as sim.cost.stage.Speculation charges it)
    acceptance_length: float | None = None
    prefix_cache: PrefixCacheSummary | None = None  # with scheduler.prefix_caching
    sessions: SessionSummary | None = None  # multi-turn sessions (requests count turns)

    def to_dict(self) -> dict[str, Any]:
        """The summary as `summary.json` writes it (empty optional parts left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "reject_reasons" and not value:
                continue
            if value is None and f.name in (
                "classes",
                "kv_transfer",
                "acceptance_length",
                "prefix_cache",
                "sessions",
            ):
                continue
            out[f.name] = _plain(value)
        return out

    def metric(self, name: str) -> Any:
        """One figure by dotted name: `throughput_rps`, `ttft_s.p99`, `cost.devices`,
        `slo.attainment` (None where the summary has no such figure)."""
        value: Any = self.to_dict()
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value


def _plain(value: Any) -> Any:
    if isinstance(value, LatencyStats | SLOReport):
        return value.to_dict()
    if isinstance(
        value,
        ClassSummary
        | CostSummary
        | EnergySummary
        | KVTransferSummary
        | PrefixCacheSummary
        | SessionSummary,
    ):
        out = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, PrefixCacheSummary) and value.tiers is None:
            del out["tiers"]  # tiered KV off: the group reads as before
        return out
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def summarize(
    run: RunRecords, requests: pd.DataFrame, devices: pd.DataFrame, links: pd.DataFrame
) -> Summary:
    scenario = run.deployment.scenario
    recorder = run.recorder
    end_s = run.duration_s
    lat = latency_columns(requests)
    n = len(requests)
    finished = int((requests["status"] == "finished").sum())
    rejected_mask = requests["status"] == "rejected"
    rejected = int(rejected_mask.sum())
    start_s = float(requests["arrival_s"].min()) if n else 0.0
    span = max(end_s - start_s, 0.0)
    out_tokens = float(lat["output_tokens"].sum())
    in_tokens = float(lat["prompt_tokens"].sum())
    reasons: dict[str, int] = {}
    if rejected:
        # Reasons read "category: details"; the summary counts categories.
        counts = Counter(
            str(r).split(":", 1)[0] for r in requests.loc[rejected_mask, "reject_reason"]
        )
        reasons = dict(sorted(counts.items()))
    slo = scenario.slo
    classes = None
    names = scenario.workload.class_names
    if len(names) > 1:
        classes = {}
        for name in names:
            sub = lat[lat["class"] == name]
            total = int((requests["class"] == name).sum())
            cls_slo = scenario.workload.slo_for(name) or slo
            classes[name] = ClassSummary(
                total,
                len(sub),
                LatencyStats.of(sub["ttft_s"]),
                LatencyStats.of(sub["tpot_s"]),
                LatencyStats.of(sub["e2e_s"]),
                SLOReport.of(sub, cls_slo, total, span),
            )
    bubble, per_stage = _pipeline(run)
    output_rate = out_tokens / span if span > 0 else None
    kv_transfer = None
    if run.kv_transfers is not None:
        dis = scenario.disaggregation
        kv_transfer = KVTransferSummary(*run.kv_transfers, dis.transfer if dis else "")
    return Summary(
        scenario=scenario.name,
        seed=scenario.seed,
        requests=n,
        finished=finished,
        rejected=rejected,
        unfinished=n - finished - rejected,
        sim_time_s=end_s,
        span_s=span,
        throughput_rps=finished / span if span > 0 else None,
        output_tokens_per_s=output_rate,
        total_tokens_per_s=(out_tokens + in_tokens) / span if span > 0 else None,
        ttft_s=LatencyStats.of(lat["ttft_s"]),
        tpot_s=LatencyStats.of(lat["tpot_s"]),
        e2e_s=LatencyStats.of(lat["e2e_s"]),
        queue_s=LatencyStats.of(lat["queue_s"]),
        preemptions=int(requests["preemptions"].sum()),
        mfu=_mean(devices, "mfu"),
        hfu=_mean(devices, "hfu"),
        mbu=_mean(devices, "mbu"),
        kv_utilization=recorder.kv_share_seconds / (span * max(len(recorder.engines), 1))
        if span > 0
        else 0.0,
        kv_utilization_peak=recorder.kv_share_peak,
        device_utilization=_mean(devices, "utilization"),
        iterations=recorder.iterations_total,
        reject_reasons=reasons,
        slo=SLOReport.of(lat, slo, n, span),
        classes=classes,
        bubble_fraction=bubble,
        stage_utilization=per_stage,
        memory_bytes_per_device_peak=float(devices["memory_bytes_peak"].max())
        if len(devices)
        else 0.0,
        link_utilization_max=float(links["utilization"].max()) if len(links) else 0.0,
        cost=_cost(run, output_rate),
        energy=_energy(devices, end_s, finished, out_tokens),
        kv_transfer=kv_transfer,
        acceptance_length=scenario.speculative.expected_tokens if scenario.speculative else None,
        prefix_cache=PrefixCacheSummary.of(run)
        if scenario.scheduler.policy_params().prefix_caching
        else None,
        sessions=SessionSummary.of(requests) if "session_id" in requests else None,
    )


def _pipeline(run: RunRecords) -> tuple[float, list[float]]:
    """Bubble fraction, 1 − Σ stage busy / (stages × time in flight) over all replicas,
    and each stage's busy share of the run (averaged over replicas)."""
    end_s = run.duration_s
    replicas = run.deployment.replicas
    busy = sum(st.busy_s for st in run.stages)
    active = zip(replicas, run.active_s, strict=True)
    capacity = sum(len(rep.stages) * seconds for rep, seconds in active)
    n_stages = len(replicas[0].stages) if replicas else 0
    per_stage = [
        float(np.mean([st.busy_s for st in run.stages if st.stage == i])) / end_s
        if end_s > 0
        else 0.0
        for i in range(n_stages)
    ]
    # (rounding can leave ~1e-16 where a stage was never idle)
    bubble = 1.0 - busy / capacity if capacity > 0 else 0.0
    return (0.0 if bubble < 1e-12 else bubble), per_stage


def _cost(run: RunRecords, output_tokens_per_s: float | None) -> CostSummary:
    devices = 0
    per_hour: float | None = 0.0
    for rep in run.deployment.replicas:
        n = sum(len(st.devices) for st in rep.stages)
        devices += n
        price = rep.device.price_per_hour_usd
        per_hour = None if per_hour is None or price is None else per_hour + n * price
    rate = output_tokens_per_s or 0.0
    per_million = per_hour / 3600 / rate * 1e6 if per_hour and rate else None
    return CostSummary(devices, per_hour, per_million)


def _energy(devices: pd.DataFrame, end_s: float, finished: int, out_tokens: float) -> EnergySummary:
    """The devices' energy summed (their frame's `energy_j`), or none when any lacks power."""
    missing = sorted(set(devices.loc[devices["energy_j"].isna(), "kind"])) if len(devices) else []
    if missing or not len(devices):
        return EnergySummary(None, None, None, None, missing)
    joules = float(devices["energy_j"].sum())
    return EnergySummary(
        joules,
        joules / end_s if end_s > 0 else None,
        joules / finished if finished else None,
        joules / out_tokens if out_tokens else None,
        [],
    )


def _mean(devices: pd.DataFrame, column: str) -> float:
    return float(devices[column].mean()) if len(devices) else 0.0
