"""Writing results and printing them: files beside each other, tables on the terminal.

A results directory holds `summary.json`, `scenario.resolved.yaml` (every default
filled in, every reference inlined: the configuration that was used), and the records
as Parquet or CSV: `requests`, `iterations`, `devices`, `links`; with `output.trace`,
`trace.json` (Chrome/Perfetto, see sim.results.trace).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from sim.results.run import Results


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars plain numbers, keys strings,
    tuples lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def fmt_num(v: Any, fmt: str, scale: float = 1.0) -> str:
    """`v * scale` in format `fmt`, or "-" when there is no number (None or NaN)."""
    return "-" if v is None or v != v else format(v * scale, fmt)  # v != v: NaN


def aligned(
    header: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int] = ()
) -> list[str]:
    """The lines of a text table: each column as wide as its widest cell, right-justified
    (left-justified: the columns numbered in `left`), two spaces apart, no trailing
    spaces."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(json_safe(summary), indent=2, sort_keys=False)


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


def latency_table(summary: dict[str, Any]) -> list[str]:
    """Mean and percentiles of each latency, in ms — or in s when a run is long enough
    that milliseconds would not fit the columns."""
    stats = [summary[key] for key, _ in LATENCIES]
    largest = max((v for st in stats for v in st.values() if v is not None), default=0.0)
    unit, scale = ("s", 1.0) if largest >= 100.0 else ("ms", 1e3)
    lines = ["", f"{f'latency ({unit})':<14}{'mean':>11}{'p50':>11}{'p90':>11}{'p99':>11}"]
    for (_, label), st in zip(LATENCIES, stats, strict=True):
        cells = [
            "-" if st[k] is None else f"{st[k] * scale:,.1f}" for k in ("mean", "p50", "p90", "p99")
        ]
        lines.append(f"{label:<14}" + "".join(f"{c:>11}" for c in cells))
    return lines


def summary_table(summary: dict[str, Any]) -> str:
    """A compact, readable summary of one run."""
    lines = [
        f"scenario {summary['scenario']} (seed {summary['seed']}): "
        f"{summary['finished']}/{summary['requests']} finished, "
        f"{summary['rejected']} rejected, {summary['preemptions']} preemptions",
        f"simulated {summary['span_s']:,.1f} s: "
        f"{(summary['throughput_rps'] or 0):,.3f} req/s, "
        f"{(summary['output_tokens_per_s'] or 0):,.1f} output tok/s, "
        f"{(summary['total_tokens_per_s'] or 0):,.1f} total tok/s",
        f"MFU {summary['mfu']:.1%}, HBM bandwidth {summary['mbu']:.1%}, "
        f"device busy {summary['device_utilization']:.1%}, "
        f"KV in use {summary['kv_utilization']:.1%} (peak {summary['kv_utilization_peak']:.1%})",
    ]
    lines += latency_table(summary)
    cost = summary.get("cost") or {}
    if cost.get("usd_per_million_output_tokens"):
        lines.append(
            f"cost: {cost['devices']} devices, ${cost['usd_per_hour']:.2f}/h, "
            f"${cost['usd_per_million_output_tokens']:.2f} per million output tokens "
            "(indicative prices)"
        )
    slo = summary.get("slo") or {}
    if slo:
        lines.append("")
        parts = [
            f"SLO attainment {slo['attainment']:.1%}",
            f"goodput {slo['goodput_rps'] or 0:,.3f} req/s",
        ]
        for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "e2e")):
            if f"{key}_bound" in slo:
                ok = "ok" if slo[f"{key}_holds"] else "MISSED"
                parts.append(
                    f"{label} p{slo['percentile']:g} {_ms(slo[f'{key}_at_percentile'])} ms "
                    f"<= {_ms(slo[f'{key}_bound'])} ms {ok}"
                )
        lines.append("; ".join(parts))
    if summary.get("reject_reasons"):
        lines.append("")
        for why, count in summary["reject_reasons"].items():
            lines.append(f"rejected {count}: {why}")
    return "\n".join(lines)
