"""`llmsim compare`: variants of one scenario (sim.studies.variants), run side by side.

A variant is the scenario with a few keys overridden; its overrides are applied before
the shared `--set` ones, so `--set scheduler.max_num_seqs=64` refines every
`scheduler=...` variant. Each variant is loaded and simulated on its own (in the study
pool when there are several), so an invalid variant becomes a failed row carrying its
one-line error and the others still run. Results keep the order in which the variants
were listed, and each is as deterministic as `simulate` itself.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.results import plots
from sim.results.run import simulate
from sim.results.summary import Summary
from sim.results.table import aligned, fmt_num, json_safe
from sim.results.trace import write_trace
from sim.studies.pool import Pool, check_jobs, default_jobs
from sim.studies.variants import Variant

GANTT_EXECUTIONS = 40  # stage executions the default Gantt window shows


# ------------------------------------------------------------------------ running


def gantt_replica(stages: pd.DataFrame) -> pd.DataFrame:
    """The executions the Gantt chart draws: replica 0's (when there are several)."""
    if len(stages) == 0:
        return stages
    first = int(stages["replica"].min())
    return stages[stages["replica"] == first]


def default_window(stages: pd.DataFrame, n: int = GANTT_EXECUTIONS) -> tuple[float, float] | None:
    """About `n` stage executions around the median start time of the run: short
    enough to show individual micro-batches."""
    if len(stages) == 0:
        return None
    rows = stages.sort_values("start_s", kind="stable")
    lo = max(0, min(len(rows) // 2 - n // 2, len(rows) - n))
    chosen = rows.iloc[lo : lo + n]
    return float(chosen["start_s"].min()), float(chosen["end_s"].max())


def window_rows(stages: pd.DataFrame, window: tuple[float, float]) -> pd.DataFrame:
    """Executions that overlap the window."""
    mask = (stages["end_s"] > window[0]) & (stages["start_s"] < window[1])
    return stages[mask].reset_index(drop=True)


@dataclass
class VariantResult:
    """What one variant gave: its summary, or the one-line error that stopped it."""

    variant: Variant
    summary: Summary | None = None
    error: str | None = None
    gantt: pd.DataFrame | None = None  # the Gantt window's executions
    window_s: tuple[float, float] | None = None
    n_stages: int = 0
    replicas: int = 0
    wall_s: float = 0.0
    trace: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def metric(self, name: str) -> Any:
        """One figure of the summary by dotted name (None when the variant failed)."""
        return self.summary.metric(name) if self.summary is not None else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.variant.index,
            "label": self.variant.label,
            "overrides": self.variant.values(),
        }
        if self.ok and self.summary is not None:
            out["summary"] = json_safe(self.summary.to_dict())
            if self.window_s is not None:
                out["gantt_window_s"] = list(self.window_s)
            if self.trace:
                out["trace"] = self.trace
        else:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class _Task:
    source: str | dict[str, Any]
    variant: Variant
    sets: tuple[str, ...]
    window_s: tuple[float, float] | None
    trace_dir: str | None


def run_variant(task: _Task) -> VariantResult:
    """Load and simulate one variant (a module-level function: it runs in a worker)."""
    result = VariantResult(task.variant)
    try:
        scenario = load_scenario(task.source, [*task.variant.overrides, *task.sets])
        results = simulate(scenario, records=True)
    except LlmsimError as exc:
        result.error = exc.line()
        return result
    result.summary = results.summary
    result.wall_s = results.wall_s
    result.replicas = scenario.parallel.replicas
    rows = gantt_replica(results.stages)
    result.n_stages = max(scenario.parallel.pp, int(rows["stage"].max()) + 1 if len(rows) else 0)
    window = task.window_s or default_window(rows)
    if window is not None:
        result.window_s = window
        result.gantt = window_rows(rows, window)
    if task.trace_dir is not None:
        path = Path(task.trace_dir) / f"trace-{task.variant.index}.json"
        write_trace(results, path)
        result.trace = str(path)
    return result


def run_variants(
    source: str | Path | dict[str, Any],
    variants: Sequence[Variant],
    sets: Sequence[str] = (),
    *,
    jobs: int | None = None,
    window_s: tuple[float, float] | None = None,
    trace_dir: str | Path | None = None,
    on_done: Callable[[VariantResult], None] | None = None,
) -> list[VariantResult]:
    """Simulate each variant; `jobs` worker processes (1: in this process). The list
    is in the variants' order whatever order they finish in."""
    check_jobs(jobs)
    src: str | dict[str, Any] = str(source) if isinstance(source, Path) else source
    tdir = str(trace_dir) if trace_dir is not None else None
    if tdir is not None:
        Path(tdir).mkdir(parents=True, exist_ok=True)
    tasks = [_Task(src, v, tuple(sets), window_s, tdir) for v in variants]
    workers = min(default_jobs(len(tasks)) if jobs is None else jobs, max(len(tasks), 1))
    results: list[VariantResult | None] = [None] * len(tasks)
    with Pool(workers) as pool:
        for i, done in pool.as_completed(run_variant, tasks):
            results[i] = done
            if on_done:
                on_done(done)
    return [r for r in results if r is not None]


# ------------------------------------------------------------------------ reporting

# The summary figures compare.csv holds, by column name: a dotted summary metric, or a
# function of the summary.
CSV_COLUMNS: dict[str, str | Callable[[Summary], Any]] = {
    "throughput_rps": "throughput_rps",
    "output_tokens_per_s": "output_tokens_per_s",
    "ttft_p50_s": "ttft_s.p50",
    "ttft_p99_s": "ttft_s.p99",
    "tpot_p50_s": "tpot_s.p50",
    "tpot_p99_s": "tpot_s.p99",
    "bubble_fraction": "bubble_fraction",
    "stage_utilization": lambda s: "/".join(f"{u:.4f}" for u in s.stage_utilization),
    "link_utilization_max": "link_utilization_max",
    "memory_gb_per_device_peak": lambda s: s.memory_bytes_per_device_peak / 1e9,
}


def _column(s: Summary, get: str | Callable[[Summary], Any]) -> Any:
    return s.metric(get) if isinstance(get, str) else get(s)


def _stage_util(values: Sequence[float] | None) -> str:
    if not values:
        return "-"
    pcts = [round(v * 100) for v in values]
    if len(pcts) > 8:
        return f"{min(pcts)}-{max(pcts)}% ({len(pcts)})"
    return "/".join(str(p) for p in pcts) + "%"


TABLE_HEADER = (
    "#",
    "variant",
    "req/s",
    "out tok/s",
    "TTFT ms p50/p99",
    "TPOT ms p50/p99",
    "bubble",
    "stage util",
    "link max",
    "mem GB",
)


def table(results: Sequence[VariantResult]) -> str:
    """One row per variant: throughput, latency percentiles, pipeline and memory use."""
    rows: list[tuple[str, ...]] = []
    for r in results:
        s = r.summary
        if not r.ok or s is None:
            rows.append((str(r.variant.index), r.variant.label, f"FAILED: {r.error}"))
            continue
        ttft, tpot = s.ttft_s, s.tpot_s
        rows.append(
            (
                str(r.variant.index),
                r.variant.label,
                fmt_num(s.throughput_rps, ",.3f"),
                fmt_num(s.output_tokens_per_s, ",.1f"),
                f"{fmt_num(ttft.p50, ',.1f', 1e3)}/{fmt_num(ttft.p99, ',.1f', 1e3)}",
                f"{fmt_num(tpot.p50, ',.1f', 1e3)}/{fmt_num(tpot.p99, ',.1f', 1e3)}",
                fmt_num(s.bubble_fraction, ".1%"),
                _stage_util(s.stage_utilization),
                fmt_num(s.link_utilization_max, ".1%"),
                fmt_num(s.memory_bytes_per_device_peak, ",.1f", 1e-9),
            )
        )
    return "\n".join(aligned(TABLE_HEADER, rows, left=(1,)))


def to_json(
    results: Sequence[VariantResult],
    scenario: str,
    vary: Sequence[str],
    sets: Sequence[str] = (),
) -> dict[str, Any]:
    """`{scenario, vary, set, variants: [{index, label, overrides, summary | error}]}`."""
    return {
        "scenario": scenario,
        "vary": list(vary),
        "set": list(sets),
        "variants": [r.to_dict() for r in results],
    }


def write_csv(results: Sequence[VariantResult], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "label", *CSV_COLUMNS, "error"])
        for r in results:
            s = r.summary
            cells = [_column(s, get) if r.ok and s else None for get in CSV_COLUMNS.values()]
            w.writerow(
                [
                    r.variant.index,
                    r.variant.label,
                    *("" if v is None else v for v in cells),
                    r.error or "",
                ]
            )


@dataclass
class Written:
    """The files a comparison wrote."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)


def write_outputs(
    results: Sequence[VariantResult],
    out_dir: str | Path,
    document: dict[str, Any],
    *,
    title: str = "",
) -> Written:
    """compare.json, compare.csv, gantt.png and metrics.png under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = Written(out)
    path = out / "compare.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    written.files.append(path)
    path = out / "compare.csv"
    write_csv(results, path)
    written.files.append(path)
    panels = [
        plots.GanttPanel(
            label=f"#{r.variant.index} {r.variant.label}",
            stages=r.gantt,
            window_s=r.window_s,
            n_stages=r.n_stages,
            error=r.error,
            note="replica 0" if r.replicas > 1 else "",
        )
        for r in results
    ]
    written.files.append(plots.gantt(panels, out / "gantt.png", title=title))
    metrics = {
        "throughput (req/s)": [_scaled(r.metric("throughput_rps"), 1) for r in results],
        "TTFT p99 (ms)": [_scaled(r.metric("ttft_s.p99"), 1e3) for r in results],
        "TPOT p99 (ms)": [_scaled(r.metric("tpot_s.p99"), 1e3) for r in results],
        "bubble fraction (%)": [_scaled(r.metric("bubble_fraction"), 100) for r in results],
    }
    labels = [f"#{r.variant.index} {r.variant.short_label}" for r in results]
    keys = ", ".join(k for k, _ in results[0].variant.assignments) if results else ""
    bars_title = f"{title}: {keys}" if title and keys else title or keys
    written.files.append(plots.metric_bars(labels, metrics, out / "metrics.png", title=bars_title))
    written.files.extend(Path(r.trace) for r in results if r.trace)
    return written


def _scaled(v: float | None, k: float) -> float | None:
    return None if v is None else float(v) * k
