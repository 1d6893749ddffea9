"""`llmsim sweep`: a grid or list of scenario variants, run in parallel, resumable."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from sim.cli.options import add_progress, progress_flag
from sim.errors import LlmsimError
from sim.results.table import aligned, fmt_num, json_safe

if TYPE_CHECKING:  # pandas only when the command runs: `llmsim --help` stays quick
    import pandas as pd


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid or list of scenario variants in parallel into one resumable table",
        description="Run every task of a sweep file (a base scenario, overrides as a grid "
        "and/or a list, task run or capacity) on a local process pool or Ray. Each finished "
        "task is committed to an SQLite table at once; run again, the sweep skips the tasks "
        "already there. Prints the rows ranked by capacity (or goodput) and the Pareto front "
        "against cost per million output tokens, written as <table>.pareto.csv.",
    )
    p.add_argument("sweep", help="sweep YAML file")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    p.add_argument("--jobs", type=int, help="worker processes / Ray CPUs (default: CPU count)")
    p.add_argument(
        "--max-cost",
        type=float,
        metavar="USD_PER_MILLION_TOKENS",
        help="leave rows costing more per million output tokens out of the Pareto front",
    )
    p.add_argument("--out", help="results table path (default: the sweep's output)")
    p.add_argument("--limit", type=int, help="run at most this many pending tasks now")
    p.add_argument("--retry-errors", action="store_true", help="run failed tasks again")
    add_progress(p)
    p.add_argument("--json", action="store_true", help="print rows and front as one JSON object")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.studies.store import pareto_front, pareto_path, ranked, write_pareto
    from sim.studies.sweep import run_sweep
    from sim.studies.sweep_tasks import load_sweep

    if ns.max_cost is not None and not ns.max_cost > 0:
        raise LlmsimError(f"expected a positive number (got {ns.max_cost})", key="--max-cost")
    sweep = load_sweep(ns.sweep, ns.out)
    outcome = run_sweep(
        sweep,
        executor=ns.executor,
        jobs=ns.jobs,
        address=ns.address,
        limit=ns.limit,
        retry_errors=ns.retry_errors,
        progress=progress_flag(ns.progress),
    )
    metric = sweep.metric
    rows = ranked(outcome.rows, metric)
    front = pareto_front(rows, metric, max_cost=ns.max_cost)
    written = write_pareto(front, pareto_path(sweep.table))
    n_ok = int((rows["status"] == "ok").sum())
    n_err = len(rows) - n_ok
    if ns.json:
        print(
            json.dumps(
                {
                    "sweep": sweep.spec.name,
                    "table": str(sweep.table),
                    "pareto_csv": str(written),
                    "metric": metric,
                    "ran": outcome.ran,
                    "skipped": outcome.skipped,
                    "left": outcome.left,
                    "rows": _records(rows.drop(columns=["scenario_yaml"])),
                    "pareto": [str(t) for t in front["task_id"]],
                },
                indent=2,
            )
        )
    else:
        print(
            f"sweep {sweep.spec.name}: {len(sweep.tasks)} tasks, ran {outcome.ran} now, "
            f"{outcome.skipped} already in {sweep.table}"
            + (f", {outcome.left} left (--limit)" if outcome.left else "")
            + f"; {n_ok} ok, {n_err} failed"
        )
        print()
        print(rows_table(rows, metric))
        cap = f" at most ${ns.max_cost:g} per million output tokens" if ns.max_cost else ""
        print(f"\nPareto front: {_metric_name(metric)} vs $ per million output tokens{cap}")
        print(rows_table(front, metric) if len(front) else "  (no row with both values)")
        print(f"\ntable {sweep.table}; front {written}")
    return 1 if len(rows) and n_ok == 0 and outcome.left == 0 else 0


def _metric_name(metric: str) -> str:
    return "capacity" if metric == "capacity_rps" else "goodput"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json_safe(frame.to_dict(orient="records"))
    for row in out:
        if row.get("overrides"):
            row["overrides"] = json.loads(row["overrides"])
    return out


def rows_table(rows: pd.DataFrame, metric: str) -> str:
    """Ranked rows: the metric (with its interval for capacity), goodput, latency, cost,
    joules per output token;
    failed tasks last with their one-line error."""
    capacity = metric == "capacity_rps"
    header: tuple[str, ...] = (
        "task",
        "overrides",
        *(("capacity req/s", "interval") if capacity else ()),
        "goodput",
        "attain",
        "TTFT p99 ms",
        "TPOT p99 ms",
        "dev",
        "$/h",
        "$/M tok",
        "J/tok",
    )
    body: list[tuple[str, ...]] = []
    failed: list[str] = []
    for row in rows.to_dict(orient="records"):
        if row["status"] != "ok":
            failed.append(f"{row['task_id']}  {row['label']}  FAILED: {row['error']}")
            continue
        cells: list[str] = [str(row["task_id"]), str(row["label"])]
        if capacity:
            lo, hi = (fmt_num(row[k], ",.2f") for k in ("capacity_lo_rps", "capacity_hi_rps"))
            cells += [fmt_num(row["capacity_rps"], ",.3f"), f"{lo}–{hi}"]
        cells += [
            fmt_num(row["goodput_rps"], ",.3f"),
            fmt_num(row["attainment"], ".4f"),
            fmt_num(row["ttft_p99_s"], ",.1f", 1e3),
            fmt_num(row["tpot_p99_s"], ",.1f", 1e3),
            fmt_num(row["devices"], ".0f"),
            fmt_num(row["usd_per_hour"], ",.2f"),
            fmt_num(row["usd_per_million_output_tokens"], ",.3f"),
            fmt_num(row["joules_per_output_token"], ",.3f"),
        ]
        body.append(tuple(cells))
    lines = aligned(header, body, left=(0, 1)) if body else []
    notes = [
        f"{row['task_id']}  note: {row['note']}"
        for row in rows.to_dict(orient="records")
        if row["status"] == "ok" and isinstance(row.get("note"), str) and row["note"]
    ]
    return "\n".join([*lines, *failed, *notes]) or "  (no rows)"
