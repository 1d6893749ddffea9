"""`llmsim compare`: variants of one scenario, run side by side.

A variant is the scenario with a few keys overridden. `--vary KEY=V1,V2` is one axis of
variants: the values are YAML (`parallel.tp=4,8` are ints), split on top-level commas
only, so a mapping or a list passes whole (`scheduler={policy: vllm},{policy: sarathi}`).
`--vary K1:K2=A1:A2,B1:B2` varies keys together (zipped). Several axes form a cartesian
product, the first axis outermost. A variant's overrides are applied before the shared
`--set` ones, so `--set scheduler.max_num_seqs=64` refines every `scheduler=...` variant.

Each variant is loaded and simulated on its own (in a process pool when there are
several), so an invalid variant becomes a failed row carrying its one-line error and
the others still run. Results keep the order in which the variants were listed, and
each is as deterministic as `simulate` itself.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml

from sim.errors import LlmsimError
from sim.results.report import fmt_num

T = TypeVar("T")
R = TypeVar("R")
GANTT_EXECUTIONS = 40  # stage executions the default Gantt window shows
_OPEN = {"{": "}", "[": "]", "(": ")"}
_CLOSE = {v: k for k, v in _OPEN.items()}


# ------------------------------------------------------------------------ variants


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and quotes: `{a: 1, b: 2},[3, 4]` is two parts.

    Raises ValueError on unbalanced brackets or an unterminated quote."""
    parts: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if not stack or stack.pop() != _CLOSE[ch]:
                raise ValueError(f"unbalanced {ch!r}")
        elif ch == sep and not stack:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    if stack:
        raise ValueError(f"unclosed {stack[-1]!r}")
    parts.append(text[start:])
    return parts


@dataclass(frozen=True)
class VaryAxis:
    """One `--vary`: keys varied together, and the raw YAML text of each point."""

    keys: tuple[str, ...]
    points: tuple[tuple[str, ...], ...]


def parse_vary(spec: str, where: str = "--vary") -> VaryAxis:
    """`KEY=V1,V2,...` or `K1:K2=A1:A2,B1:B2`; errors name `where` (the flag or key)."""

    def bad(message: str) -> LlmsimError:
        return LlmsimError(message, key=where)

    form = "expected KEY=V1,V2,... or K1:K2=A1:A2,B1:B2"
    if "=" not in spec:
        raise bad(f"{form} (got {spec!r})")
    lhs, rhs = spec.split("=", 1)
    keys = tuple(k.strip() for k in lhs.split(":"))
    for key in keys:
        if not key or any(not part for part in key.split(".")):
            raise bad(f"{form}; empty key in {lhs.strip()!r} (got {spec!r})")
    if len(set(keys)) != len(keys):
        raise bad(f"a key appears twice in {lhs.strip()!r}")
    if not rhs.strip():
        raise bad(f"{form}; no values for {lhs.strip()} (got {spec!r})")
    try:
        values = [v.strip() for v in split_top_level(rhs, ",")]
    except ValueError as exc:
        raise bad(f"{exc} in values {rhs!r}") from None
    points: list[tuple[str, ...]] = []
    for value in values:
        if len(keys) == 1:
            parts = [value]
        else:
            try:
                parts = [p.strip() for p in split_top_level(value, ":")]
            except ValueError as exc:
                raise bad(f"{exc} in value {value!r}") from None
            if len(parts) != len(keys):
                raise bad(
                    f"{len(keys)} keys {lhs.strip()} but value {value!r} has {len(parts)} "
                    f"part(s); give one ':'-separated part per key"
                )
        for key, part in zip(keys, parts, strict=True):
            if not part:
                raise bad(f"{key} has an empty value in {spec!r}")
            try:
                yaml.safe_load(part)
            except yaml.YAMLError:
                raise bad(f"{key}: {part!r} is not valid YAML") from None
        points.append(tuple(parts))
    return VaryAxis(keys, tuple(points))


@dataclass(frozen=True)
class Variant:
    """One point of the product: `(key, raw YAML value)` pairs, 1-based `index`."""

    index: int
    assignments: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """The varied `key=value` pairs, as given."""
        return " ".join(f"{k}={v}" for k, v in self.assignments) or "base"

    @property
    def short_label(self) -> str:
        """The values only (the keys are the same for every variant)."""
        return ", ".join(v for _, v in self.assignments) or "base"

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.assignments]

    def values(self) -> dict[str, Any]:
        """The varied keys with their values parsed as YAML."""
        return {k: yaml.safe_load(v) for k, v in self.assignments}


def expand(axes: Sequence[VaryAxis]) -> list[Variant]:
    """The cartesian product of the axes (first axis outermost), in order."""
    seen: set[str] = set()
    for axis in axes:
        for key in axis.keys:
            if key in seen:
                raise LlmsimError(f"{key} is varied twice", key="--vary")
            seen.add(key)
    out = []
    for i, combo in enumerate(itertools.product(*(axis.points for axis in axes)), start=1):
        pairs = tuple(
            (key, value)
            for axis, point in zip(axes, combo, strict=True)
            for key, value in zip(axis.keys, point, strict=True)
        )
        out.append(Variant(i, pairs))
    return out


def parse_window(text: str, where: str = "--window") -> tuple[float, float]:
    """`START:END` in seconds of simulated time."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = float(parts[0]), float(parts[1])
    except ValueError:
        raise LlmsimError(f"expected START:END in seconds (got {text!r})", key=where) from None
    if not 0 <= start < end:
        raise LlmsimError(f"expected 0 <= START < END (got {text!r})", key=where)
    return start, end


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
    summary: dict[str, Any] | None = None
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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.variant.index,
            "label": self.variant.label,
            "overrides": self.variant.values(),
        }
        if self.ok:
            out["summary"] = self.summary
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
    from sim.plan import load_scenario
    from sim.results.report import json_safe
    from sim.results.run import simulate

    result = VariantResult(task.variant)
    try:
        scenario = load_scenario(task.source, [*task.variant.overrides, *task.sets])
        results = simulate(scenario, records=True)
    except LlmsimError as exc:
        result.error = exc.line()
        return result
    result.summary = json_safe(results.summary)
    result.wall_s = results.wall_s
    result.replicas = scenario.parallel.replicas
    rows = gantt_replica(results.stages)
    result.n_stages = max(scenario.parallel.pp, int(rows["stage"].max()) + 1 if len(rows) else 0)
    window = task.window_s or default_window(rows)
    if window is not None:
        result.window_s = window
        result.gantt = window_rows(rows, window)
    if task.trace_dir is not None:
        from sim.results.trace import write_trace

        path = Path(task.trace_dir) / f"trace-{task.variant.index}.json"
        write_trace(results, path)
        result.trace = str(path)
    return result


def default_jobs(n_variants: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, n_variants))


def check_jobs(jobs: int | None, key: str = "--jobs") -> None:
    """A worker count is positive (None: the default); errors name `key`."""
    if jobs is not None and jobs < 1:
        raise LlmsimError(f"expected a positive number (got {jobs})", key=key)


def run_parallel(
    fn: Callable[[T], R], items: Sequence[T], jobs: int, *, cancel: bool = False
) -> Generator[tuple[int, R], None, None]:
    """`(index, fn(item))` as each call finishes: in this process, in order, when `jobs`
    is 1 or there is one item, else in a pool of min(jobs, items) processes (`fn` at
    module level). Left early (an error, an interrupt, closed), the pool waits for the
    calls running; `cancel` drops those not yet started instead of running them."""
    if jobs == 1 or len(items) <= 1:
        for i, item in enumerate(items):
            yield i, fn(item)
        return
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)))
    try:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=cancel)


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
    workers = default_jobs(len(tasks)) if jobs is None else jobs
    results: list[VariantResult | None] = [None] * len(tasks)
    with closing(run_parallel(run_variant, tasks, workers)) as finished:
        for i, done in finished:
            results[i] = done
            if on_done:
                on_done(done)
    return [r for r in results if r is not None]


# ------------------------------------------------------------------------ reporting


@dataclass(frozen=True)
class Column:
    name: str  # CSV header
    get: Callable[[dict[str, Any]], Any]


def _latency(metric: str, q: str) -> Callable[[dict[str, Any]], Any]:
    return lambda s: (s.get(metric) or {}).get(q)


CSV_COLUMNS = (
    Column("throughput_rps", lambda s: s.get("throughput_rps")),
    Column("output_tokens_per_s", lambda s: s.get("output_tokens_per_s")),
    Column("ttft_p50_s", _latency("ttft_s", "p50")),
    Column("ttft_p99_s", _latency("ttft_s", "p99")),
    Column("tpot_p50_s", _latency("tpot_s", "p50")),
    Column("tpot_p99_s", _latency("tpot_s", "p99")),
    Column("bubble_fraction", lambda s: s.get("bubble_fraction")),
    Column(
        "stage_utilization",
        lambda s: "/".join(f"{u:.4f}" for u in s.get("stage_utilization") or []),
    ),
    Column("link_utilization_max", lambda s: s.get("link_utilization_max")),
    Column(
        "memory_gb_per_device_peak",
        lambda s: (
            None
            if s.get("memory_bytes_per_device_peak") is None
            else s["memory_bytes_per_device_peak"] / 1e9
        ),
    ),
)


def _stage_util(values: Sequence[float] | None) -> str:
    if not values:
        return "-"
    pcts = [round(v * 100) for v in values]
    if len(pcts) > 8:
        return f"{min(pcts)}-{max(pcts)}% ({len(pcts)})"
    return "/".join(str(p) for p in pcts) + "%"


def table(results: Sequence[VariantResult]) -> str:
    """One row per variant: throughput, latency percentiles, pipeline and memory use."""
    header = (
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
    rows: list[tuple[str, ...]] = []
    for r in results:
        s = r.summary or {}
        if not r.ok:
            rows.append((str(r.variant.index), r.variant.label, f"FAILED: {r.error}"))
            continue
        ttft, tpot = s.get("ttft_s") or {}, s.get("tpot_s") or {}
        rows.append(
            (
                str(r.variant.index),
                r.variant.label,
                fmt_num(s.get("throughput_rps"), ",.3f"),
                fmt_num(s.get("output_tokens_per_s"), ",.1f"),
                f"{fmt_num(ttft.get('p50'), ',.1f', 1e3)}/{fmt_num(ttft.get('p99'), ',.1f', 1e3)}",
                f"{fmt_num(tpot.get('p50'), ',.1f', 1e3)}/{fmt_num(tpot.get('p99'), ',.1f', 1e3)}",
                fmt_num(s.get("bubble_fraction"), ".1%"),
                _stage_util(s.get("stage_utilization")),
                fmt_num(s.get("link_utilization_max"), ".1%"),
                fmt_num(s.get("memory_bytes_per_device_peak"), ",.1f", 1e-9),
            )
        )
    full = [r for r in rows if len(r) == len(header)]
    widths = [max(len(row[i]) for row in [header, *full]) for i in range(len(header))]
    widths[:2] = [max(len(row[i]) for row in [header, *rows]) for i in range(2)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1])]
        if len(row) == len(header):
            cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        else:
            cells += list(row[2:])
        return "  ".join(cells).rstrip()

    return "\n".join(fmt(row) for row in [header, *rows])


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
        w.writerow(["index", "label", *(c.name for c in CSV_COLUMNS), "error"])
        for r in results:
            s = r.summary or {}
            cells = [c.get(s) if r.ok else None for c in CSV_COLUMNS]
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
    from sim.results import plots

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
        "throughput (req/s)": [_get(r, "throughput_rps") for r in results],
        "TTFT p99 (ms)": [_scaled(_get(r, "ttft_s", "p99"), 1e3) for r in results],
        "TPOT p99 (ms)": [_scaled(_get(r, "tpot_s", "p99"), 1e3) for r in results],
        "bubble fraction (%)": [_scaled(_get(r, "bubble_fraction"), 100) for r in results],
    }
    labels = [f"#{r.variant.index} {r.variant.short_label}" for r in results]
    keys = ", ".join(k for k, _ in results[0].variant.assignments) if results else ""
    bars_title = f"{title}: {keys}" if title and keys else title or keys
    written.files.append(plots.metric_bars(labels, metrics, out / "metrics.png", title=bars_title))
    written.files.extend(Path(r.trace) for r in results if r.trace)
    return written


def _get(r: VariantResult, key: str, sub: str | None = None) -> float | None:
    if not r.ok or r.summary is None:
        return None
    v = r.summary.get(key)
    if sub is not None:
        v = (v or {}).get(sub)
    return None if v is None else float(v)


def _scaled(v: float | None, k: float) -> float | None:
    return None if v is None else v * k
