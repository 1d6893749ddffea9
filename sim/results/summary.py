"""Statistics of a run, computed afterwards from the flat records with pandas.

Latencies per request: TTFT = first token − arrival; TPOT = (finish − first token) /
(output tokens − 1), for requests with more than one output token; end-to-end =
finish − arrival; queueing = first scheduled − arrival. Throughput counts finished
requests over the simulated span (first arrival to last event). MFU is model FLOPs
over (span × peak FLOP/s × devices in use); bandwidth utilisation likewise with HBM
bytes. KV utilisation is the time-weighted share of KV blocks in use, averaged over engines.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.spec.slo import SLOSpec

if TYPE_CHECKING:
    from sim.engine.records import Recorder, RunRecords
    from sim.spec.scenario import Scenario

PERCENTILES = (50, 90, 99)


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


def _stats(values: pd.Series) -> dict[str, float | None]:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    stats: dict[str, float | None] = {"mean": float(v.mean())}
    for p, q in zip(PERCENTILES, np.percentile(v, PERCENTILES), strict=True):
        stats[f"p{p}"] = float(q)
    return stats


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


def slo_report(lat: pd.DataFrame, slo: SLOSpec, total: int, span_s: float) -> dict[str, Any]:
    """Attainment (share of all requests that finished within every bound), goodput,
    and whether each bound holds at the SLO's percentile."""
    if slo.empty:
        return {}
    ok = meets_slo(lat, slo)
    met = int(ok.sum())
    report: dict[str, Any] = {
        "attainment": met / total if total else None,
        "goodput_rps": met / span_s if span_s > 0 else None,
        "percentile": slo.percentile,
    }
    for key, bound in (("ttft_s", slo.ttft_s), ("tpot_s", slo.tpot_s), ("e2e_s", slo.e2e_s)):
        if bound is None:
            continue
        v = lat[key].dropna()
        at = float(np.percentile(v, slo.percentile)) if len(v) else None
        report[f"{key}_at_percentile"] = at
        report[f"{key}_bound"] = bound
        report[f"{key}_holds"] = bool(at is not None and at <= bound)
    return report


def summarize(
    scenario: Scenario,
    requests: pd.DataFrame,
    recorder: Recorder,
    devices: pd.DataFrame,
    links: pd.DataFrame,
    end_s: float,
) -> dict[str, Any]:
    lat = latency_columns(requests)
    n = len(requests)
    finished = int((requests["status"] == "finished").sum())
    rejected_mask = requests["status"] == "rejected"
    start_s = float(requests["arrival_s"].min()) if n else 0.0
    span = max(end_s - start_s, 0.0)
    out_tokens = float(lat["output_tokens"].sum())
    in_tokens = float(lat["prompt_tokens"].sum())
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "requests": n,
        "finished": finished,
        "rejected": int(rejected_mask.sum()),
        "unfinished": n - finished - int(rejected_mask.sum()),
        "sim_time_s": end_s,
        "span_s": span,
        "throughput_rps": finished / span if span > 0 else None,
        "output_tokens_per_s": out_tokens / span if span > 0 else None,
        "total_tokens_per_s": (out_tokens + in_tokens) / span if span > 0 else None,
        "ttft_s": _stats(lat["ttft_s"]),
        "tpot_s": _stats(lat["tpot_s"]),
        "e2e_s": _stats(lat["e2e_s"]),
        "queue_s": _stats(lat["queue_s"]),
        "preemptions": int(requests["preemptions"].sum()),
        "mfu": _weighted(devices, "mfu"),
        "mbu": _weighted(devices, "mbu"),
        "kv_utilization": recorder.kv_share_seconds / (span * max(len(recorder.engines), 1))
        if span > 0
        else 0.0,
        "kv_utilization_peak": recorder.kv_share_peak,
        "device_utilization": _weighted(devices, "utilization"),
        "iterations": recorder.iterations_total,
    }
    if summary["rejected"]:
        # Reasons read "category: details"; the summary counts categories.
        reasons = Counter(
            str(r).split(":", 1)[0] for r in requests.loc[rejected_mask, "reject_reason"]
        )
        summary["reject_reasons"] = dict(sorted(reasons.items()))
    slo = scenario.slo
    summary["slo"] = slo_report(lat, slo, n, span)
    classes = scenario.workload.class_names
    if len(classes) > 1:
        per_class = {}
        for name in classes:
            sub = lat[lat["class"] == name]
            total = int((requests["class"] == name).sum())
            cls_slo = scenario.workload.slo_for(name) or slo
            per_class[name] = {
                "requests": total,
                "finished": len(sub),
                "ttft_s": _stats(sub["ttft_s"]),
                "tpot_s": _stats(sub["tpot_s"]),
                "e2e_s": _stats(sub["e2e_s"]),
                "slo": slo_report(sub, cls_slo, total, span),
            }
        summary["classes"] = per_class
    return summary


def pipeline_summary(run: RunRecords) -> dict[str, Any]:
    """Bubble fraction: the share of stage time left idle while a replica had a step in
    flight, 1 − Σ stage busy / (stages × time in flight), over all replicas; and each
    stage's busy share of the run (averaged over replicas)."""
    end_s = run.duration_s
    replicas = run.deployment.replicas
    busy = sum(st.busy_s for st in run.stages)
    capacity = sum(
        len(rep.stages) * active for rep, active in zip(replicas, run.active_s, strict=True)
    )
    n_stages = len(replicas[0].stages) if replicas else 0
    per_stage = [
        float(np.mean([st.busy_s for st in run.stages if st.stage == i])) / end_s
        if end_s > 0
        else 0.0
        for i in range(n_stages)
    ]
    return {
        # (rounding can leave ~1e-16 where a stage was never idle)
        "bubble_fraction": _clean_zero(1.0 - busy / capacity) if capacity > 0 else 0.0,
        "stage_utilization": per_stage,
    }


def cost_summary(run: RunRecords, summary: dict[str, Any]) -> dict[str, Any]:
    """What the devices in use cost per hour and per million output tokens served, at
    the catalog's indicative hourly prices (null when a device has no price)."""
    devices = 0
    per_hour: float | None = 0.0
    for rep in run.deployment.replicas:
        n = sum(len(st.devices) for st in rep.stages)
        devices += n
        price = rep.device.price_per_hour_usd
        per_hour = None if per_hour is None or price is None else per_hour + n * price
    out_rate = summary.get("output_tokens_per_s") or 0.0
    return {
        "devices": devices,
        "usd_per_hour": per_hour,
        "usd_per_million_output_tokens": per_hour / 3600 / out_rate * 1e6
        if per_hour and out_rate
        else None,
    }


def _clean_zero(x: float) -> float:
    return 0.0 if x < 1e-12 else x


def resource_summary(devices: pd.DataFrame, links: pd.DataFrame) -> dict[str, Any]:
    """Peak memory per device and the busiest link (for comparisons)."""
    return {
        "memory_bytes_per_device_peak": float(devices["memory_bytes_peak"].max())
        if len(devices)
        else 0.0,
        "link_utilization_max": float(links["utilization"].max()) if len(links) else 0.0,
    }


def _weighted(devices: pd.DataFrame, column: str) -> float:
    return float(devices[column].mean()) if len(devices) else 0.0


def device_frame(run: RunRecords) -> pd.DataFrame:
    """One row per device in use: busy time, utilisation, MFU, bandwidth use, memory."""
    d = run.deployment
    end_s = run.duration_s
    precision = d.precision
    block_size = d.scenario.scheduler.policy_params().block_size
    usage = {(st.replica, st.stage): st for st in run.stages}
    rows = []
    for rep, peak_blocks in zip(d.replicas, run.kv_peak_blocks, strict=True):
        device, sizes = rep.device, rep.memory
        peak = device.flops(precision.compute_dtype)
        for stage in rep.stages:
            used = usage[(rep.index, stage.index)]
            kv_peak = peak_blocks * block_size * sizes.kv_bytes_per_token[stage.index]
            if rep.offload is not None:  # the placement's GPU share is in weight_bytes
                kv_peak = 0.0
            for dev in stage.devices:
                rows.append(
                    {
                        "device": dev,
                        "replica": rep.index,
                        "role": rep.role,
                        "kind": device.name,
                        "stage": stage.index,
                        "busy_s": used.busy_s,
                        "comm_s": used.comm_s,
                        "utilization": used.busy_s / end_s if end_s > 0 else 0.0,
                        "flops": used.flops,
                        "mfu": used.flops / (end_s * peak) if end_s > 0 else 0.0,
                        "hbm_bytes": used.bytes,
                        "mbu": used.bytes / (end_s * device.memory_bandwidth_bytes_per_s)
                        if end_s > 0
                        else 0.0,
                        "weight_bytes": sizes.weight_bytes[stage.index],
                        "workspace_bytes": sizes.workspace_bytes,
                        "kv_bytes_peak": kv_peak,
                        "memory_bytes_peak": sizes.weight_bytes[stage.index]
                        + sizes.workspace_bytes
                        + kv_peak,
                        "memory_bytes": device.memory_bytes,
                    }
                )
    return pd.DataFrame(rows)


def link_frame(run: RunRecords) -> pd.DataFrame:
    """One row per directed link that carried traffic: busy seconds and utilisation.
    TP all-reduces occupy the links of their ring for the stage's communication time."""
    end_s = run.duration_s
    d = run.deployment
    busy: dict[tuple[str, str], float] = dict(run.link_busy)
    usage = {(st.replica, st.stage): st for st in run.stages}
    for rep in d.replicas:
        for stage in rep.stages:
            comm = usage[(rep.index, stage.index)].comm_s
            if comm <= 0:
                continue
            for edge in stage.links:
                busy[edge] = busy.get(edge, 0.0) + comm
    rows = [
        {
            "link": f"{u}->{v}",
            "kind": d.links[(u, v)].kind if (u, v) in d.links else "",
            "busy_s": b,
            "utilization": b / end_s if end_s > 0 else 0.0,
        }
        for (u, v), b in sorted(busy.items())
    ]
    return pd.DataFrame(rows, columns=["link", "kind", "busy_s", "utilization"])
