"""Writing results and printing them: files beside each other, tables on the terminal.

A results directory holds `summary.json`, `scenario.resolved.yaml` (every default
filled in, every reference inlined: the configuration that was used), and the records
as Parquet or CSV: `requests`, `iterations`, `devices`, `links`; with `output.trace`,
`trace.json` (Chrome/Perfetto, see sim.results.trace).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sim.results.summary import Summary
from sim.results.table import aligned, fmt_num, json_safe

if TYPE_CHECKING:
    from sim.results.run import Results


def summary_json(summary: Summary | dict[str, Any]) -> str:
    data = summary.to_dict() if isinstance(summary, Summary) else summary
    return json.dumps(json_safe(data), indent=2, sort_keys=False)


def write_results(
    results: Results, out_dir: str | Path, fmt: str = "parquet", records: bool = True
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(summary_json(results.summary) + "\n")
    resolved = results.scenario.resolved_dict()
    (out / "scenario.resolved.yaml").write_text(
        "# The scenario as run: defaults filled in, catalog references inlined.\n"
        + yaml.safe_dump(resolved, sort_keys=False)
    )
    if records:
        frames = {
            "requests": results.requests,
            "iterations": results.iterations,
            "devices": results.devices,
            "links": results.links,
        }
        for name, frame in frames.items():
            if fmt == "csv":
                frame.to_csv(out / f"{name}.csv", index=False)
            else:
                frame.to_parquet(out / f"{name}.parquet", index=False)
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:,.1f}"


LATENCIES = (
    ("ttft_s", "TTFT"),
    ("tpot_s", "TPOT"),
    ("e2e_s", "end-to-end"),
    ("queue_s", "queueing"),
)


def latency_table(summary: Summary) -> list[str]:
    """Mean and percentiles of each latency, in ms — or in s when a run is long enough
    that milliseconds would not fit the columns."""
    stats = [getattr(summary, key).to_dict() for key, _ in LATENCIES]
    largest = max((v for st in stats for v in st.values() if v is not None), default=0.0)
    unit, scale = ("s", 1.0) if largest >= 100.0 else ("ms", 1e3)
    header = (f"latency ({unit})", "mean", "p50", "p90", "p99")
    rows = [
        (label, *(fmt_num(st[k], ",.1f", scale) for k in ("mean", "p50", "p90", "p99")))
        for (_, label), st in zip(LATENCIES, stats, strict=True)
    ]
    return ["", *aligned(header, rows, left=(0,), min_widths=(12, 9, 9, 9, 9))]


def energy_line(s: Summary) -> str:
    """Energy over the run and per output token, or why there is none."""
    e = s.energy
    if e.joules is None:
        if e.devices_without_power:
            return (
                f"energy: not reported ({', '.join(e.devices_without_power)} has no power "
                "in the catalog)"
            )
        return "energy: not reported (no device in use)"
    per_token = "-" if e.joules_per_output_token is None else f"{e.joules_per_output_token:,.3f}"
    per_request = "-" if e.joules_per_request is None else f"{e.joules_per_request:,.1f}"
    return (
        f"energy: {e.joules / 1e3:,.1f} kJ at {e.watts_mean or 0:,.0f} W mean, "
        f"{per_request} J per request, {per_token} J per output token "
        "(catalog idle/peak power)"
    )


def summary_table(s: Summary) -> str:
    """A compact, readable summary of one run."""
    lines = [
        f"scenario {s.scenario} (seed {s.seed}): {s.finished}/{s.requests} finished, "
        f"{s.rejected} rejected, {s.preemptions} preemptions",
        f"simulated {s.span_s:,.1f} s: {(s.throughput_rps or 0):,.3f} req/s, "
        f"{(s.output_tokens_per_s or 0):,.1f} output tok/s, "
        f"{(s.total_tokens_per_s or 0):,.1f} total tok/s",
        f"MFU {s.mfu:.1%} (HFU {s.hfu:.1%}), HBM bandwidth {s.mbu:.1%}, "
        f"device busy {s.device_utilization:.1%}, "
        f"KV in use {s.kv_utilization:.1%} (peak {s.kv_utilization_peak:.1%})",
    ]
    pc = s.prefix_cache
    if pc is not None:
        lines.append(
            f"prefix cache: {pc.hit_rate_tokens:.1%} of prompt tokens and "
            f"{pc.hit_rate_requests:.1%} of requests hit; {pc.cached_prefill_tokens:,} "
            f"prompt tokens cached, {pc.computed_prefill_tokens:,} computed"
        )
    lines += latency_table(s)
    cost = s.cost
    if cost.usd_per_million_output_tokens and cost.usd_per_hour is not None:
        lines.append(
            f"cost: {cost.devices} devices, ${cost.usd_per_hour:.2f}/h, "
            f"${cost.usd_per_million_output_tokens:.2f} per million output tokens "
            "(indicative prices)"
        )
    lines.append(energy_line(s))
    slo = s.slo
    if slo.bounds is not None:
        lines.append("")
        parts = [
            f"SLO attainment {slo.attainment or 0:.1%}",
            f"goodput {slo.goodput_rps or 0:,.3f} req/s",
        ]
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "e2e")):
            bound = slo.bounds.get(key)
            if bound is not None:
                ok = "ok" if bound.holds else "MISSED"
                parts.append(
                    f"{label} p{slo.percentile:g} {_ms(bound.at_percentile)} ms "
                    f"<= {_ms(bound.bound)} ms {ok}"
                )
        lines.append("; ".join(parts))
    if s.reject_reasons:
        lines.append("")
        for why, count in s.reject_reasons.items():
            lines.append(f"rejected {count}: {why}")
    return "\n".join(lines)
