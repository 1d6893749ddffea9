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
from sim.progress import Progress
from sim.results import plots
from sim.results.run import simulate
from sim.results.summary import Summary
from sim.results.table import aligned, fmt_num, json_safe
from sim.results.trace import write_trace
from sim.spec.scenario import Scenario
from sim.studies.pool import Pool, check_jobs, default_jobs
from sim.studies.variants import Variant

GANTT_EXECUTIONS = 40  # stage executions per replica drawn that a default window shows
GANTT_ROWS = 16  # (replica, stage) rows a Gantt panel draws at most
GANTT_KEEP = 20_000  # stage executions a variant keeps for its panel, from its window on


# ------------------------------------------------------------------------ running


def replica_layout(scenario: Scenario) -> list[tuple[int, str, int]]:
    """`(replica, role, stages)` of every replica in index order; role is "both" for a
    colocated replica, else "prefill" or "decode" (the prefill pool comes first)."""
    dis = scenario.disaggregation
    if dis is None:
        return [(r, "both", scenario.parallel.pp) for r in range(scenario.parallel.replicas)]
    pools = [("prefill", dis.prefill), ("decode", dis.decode)]
    roles = [(role, pool.pp) for role, pool in pools for _ in range(pool.replicas)]
    return [(r, role, pp) for r, (role, pp) in enumerate(roles)]


def gantt_rows(
    layout: Sequence[tuple[int, str, int]], cap: int = GANTT_ROWS
) -> tuple[list[tuple[int, int, str]], int]:
    """The `(replica, stage, role)` rows a Gantt panel draws, in replica and stage order,
    and how many it leaves out. Whole replicas are taken a pool at a time in turn (the
    prefill and decode pools of a disaggregated run both show) while `cap` rows hold
    them; a first replica with more stages than its pool's share shows its first ones."""
    pools: dict[str, list[tuple[int, int]]] = {}
    for replica, role, stages in layout:
        pools.setdefault(role, []).append((replica, stages))
    total = sum(stages for _, _, stages in layout)
    share = max(1, cap // max(len(pools), 1))
    chosen: list[tuple[int, int, str]] = []
    first = True
    while len(chosen) < cap:
        took = False
        for role, queue in pools.items():
            room = cap - len(chosen)
            if not queue or room <= 0:
                continue
            replica, stages = queue[0]
            if stages > room and not first:
                continue
            queue.pop(0)
            shown = min(stages, room, share) if first and stages > share else stages
            chosen.extend((replica, s, role) for s in range(shown))
            took = True
        first = False
        if not took:
            break
    chosen.sort()
    return chosen, total - len(chosen)


def lane_rows(stages: pd.DataFrame, lanes: Sequence[tuple[int, int, str]]) -> pd.DataFrame:
    """The executions of the drawn rows."""
    if len(stages) == 0:
        return stages
    wanted = pd.MultiIndex.from_tuples([(r, s) for r, s, _ in lanes])
    keys = pd.MultiIndex.from_arrays([stages["replica"], stages["stage"]])
    return stages[keys.isin(wanted)]


def default_window(stages: pd.DataFrame, n: int = GANTT_EXECUTIONS) -> tuple[float, float] | None:
    """About `n` stage executions around the median start time of the run: short
    enough to show individual micro-batches."""
    if len(stages) == 0:
        return None
    rows = stages.sort_values("start_s", kind="stable")
    lo = max(0, min(len(rows) // 2 - n // 2, len(rows) - n))
    chosen = rows.iloc[lo : lo + n]
    return float(chosen["start_s"].min()), float(chosen["end_s"].max())


def gantt_windows(
    own: Sequence[tuple[float, float] | None], given: tuple[float, float] | None = None
) -> list[tuple[float, float] | None]:
    """The window each variant's panel shows, one length for all so the panels compare
    by eye: the `given` window as it is for every variant, else the longest of the
    variants' own windows, each from its own window's start (None stays None: a failed
    variant, or one without stage executions)."""
    if given is not None:
        return [None if w is None else given for w in own]
    length = max((w[1] - w[0] for w in own if w is not None), default=0.0)
    return [None if w is None else (w[0], w[0] + length) for w in own]


def window_rows(stages: pd.DataFrame, window: tuple[float, float]) -> pd.DataFrame:
    """Executions that overlap the window."""
    mask = (stages["end_s"] > window[0]) & (stages["start_s"] < window[1])
    return stages[mask].reset_index(drop=True)


def rows_from(
    stages: pd.DataFrame, start_s: float, keep: int = GANTT_KEEP
) -> tuple[pd.DataFrame, float | None]:
    """The first `keep` executions (by start) that end after `start_s`, and the start of
    the first one left out (None when none was): the rows any window from `start_s`
    may need, without carrying a long run's whole timeline out of its worker."""
    rows = stages[stages["end_s"] > start_s].sort_values("start_s", kind="stable")
    if len(rows) <= keep:
        return rows.reset_index(drop=True), None
    return rows.iloc[:keep].reset_index(drop=True), float(rows["start_s"].iloc[keep])


@dataclass
class VariantResult:
    """What one variant gave: its summary, or the one-line error that stopped it."""

    variant: Variant
    summary: Summary | None = None
    error: str | None = None
    gantt: pd.DataFrame | None = None  # the Gantt window's executions
    window_s: tuple[float, float] | None = None  # the Gantt window
    window_given: bool = False  # by the caller (else the shared default length)
    lanes: tuple[tuple[int, int, str], ...] = ()  # (replica, stage, role) rows drawn
    hidden_rows: int = 0  # rows left out of the Gantt panel
    kept_until_s: float | None = None  # executions starting from here on were not kept
    replicas: int = 0
    wall_s: float = 0.0
    trace: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def n_stages(self) -> int:
        """Stages of the deepest replica drawn."""
        return max((s + 1 for _, s, _ in self.lanes), default=0)

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
    """Load and simulate one variant (a module-level function: it runs in a worker).
    Its Gantt window is its own (the given one, or its default); `run_variants` then
    gives every variant the same length."""
    result = VariantResult(task.variant)
    try:
        scenario = load_scenario(task.source, [*task.variant.overrides, *task.sets])
        results = simulate(scenario, records=True)
    except LlmsimError as exc:
        result.error = exc.line()
        return result
    result.summary = results.summary
    result.wall_s = results.wall_s
    layout = replica_layout(scenario)
    result.replicas = len(layout)
    lanes, result.hidden_rows = gantt_rows(layout)
    result.lanes = tuple(lanes)
    rows = lane_rows(results.stages, lanes)
    drawn_replicas = len({r for r, _, _ in lanes})
    window = task.window_s or default_window(rows, GANTT_EXECUTIONS * drawn_replicas)
    result.window_given = task.window_s is not None
    if window is not None:
        result.window_s = window
        result.gantt, result.kept_until_s = rows_from(rows, window[0])
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
    progress: bool | None = False,
) -> list[VariantResult]:
    """Simulate each variant; `jobs` worker processes (1: in this process). The list
    is in the variants' order whatever order they finish in. Every Gantt window has
    one length (`gantt_windows`). `progress` draws a bar over the variants (None: on a
    terminal only); `on_done` sees each variant as it finishes."""
    check_jobs(jobs)
    src: str | dict[str, Any] = str(source) if isinstance(source, Path) else source
    tdir = str(trace_dir) if trace_dir is not None else None
    if tdir is not None:
        Path(tdir).mkdir(parents=True, exist_ok=True)
    tasks = [_Task(src, v, tuple(sets), window_s, tdir) for v in variants]
    workers = min(default_jobs(len(tasks)) if jobs is None else jobs, max(len(tasks), 1))
    results: list[VariantResult | None] = [None] * len(tasks)
    bar = Progress(len(tasks), "compare", "variant", progress)
    try:
        with Pool(workers) as pool:
            for i, done in pool.as_completed(run_variant, tasks):
                results[i] = done
                state = f"{done.wall_s:.1f} s" if done.ok else "failed"
                bar.describe(postfix=f"#{done.variant.index} {state}")
                bar.advance()
                if on_done:
                    on_done(done)
    finally:
        bar.close()
    finished = [r for r in results if r is not None]
    windows = gantt_windows([r.window_s for r in finished], window_s)
    for r, window in zip(finished, windows, strict=True):
        if window is not None and r.gantt is not None:
            r.window_s = window
            r.gantt = window_rows(r.gantt, window)
    return finished


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
    "usd_per_million_output_tokens": "cost.usd_per_million_output_tokens",
    "joules_per_output_token": "energy.joules_per_output_token",
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
    "$/M tok",
    "J/tok",
)


def table(results: Sequence[VariantResult]) -> str:
    """One row per variant: throughput, latency percentiles, pipeline and memory use,
    dollars per million and joules per output token."""
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
                fmt_num(s.cost.usd_per_million_output_tokens, ",.2f"),
                fmt_num(s.energy.joules_per_output_token, ",.3f"),
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
            rows=r.lanes,
            hidden_rows=r.hidden_rows,
            error=r.error,
            note=_panel_note(r),
        )
        for r in results
    ]
    path = plots.gantt(panels, out / "gantt.png", title=title, window_note=window_note(results))
    written.files.append(path)
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


def window_note(results: Sequence[VariantResult]) -> str:
    """What the Gantt chart's windows are, for its caption."""
    windows = [r.window_s for r in results if r.ok and r.window_s is not None]
    if not windows:
        return ""
    if any(r.window_given for r in results):
        t0, t1 = windows[0]
        return (
            f"Window: {t0:.3f} s – {t1:.3f} s of simulated time, the same for every variant "
            "(given by --window or the scenario's compare.window_s)."
        )
    length = windows[0][1] - windows[0][0]
    return (
        f"Window: {length * 1e3:,.1f} ms for every variant, each from its own start (in its "
        "title), so a length on the time axis is the same time in every panel; the length "
        f"is the longest of the variants' own windows (about {GANTT_EXECUTIONS} stage "
        "executions per replica drawn, around the middle of the run)."
    )


def _panel_note(r: VariantResult) -> str:
    until = r.kept_until_s
    if until is not None and r.window_s is not None and r.window_s[1] > until:
        return f"executions from {until:.3f} s on not drawn: more than {GANTT_KEEP:,} kept"
    return ""


def _scaled(v: float | None, k: float) -> float | None:
    return None if v is None else float(v) * k
