"""`llmsim run`: simulate one scenario, print its summary, write its results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sim.cli.options import add_overrides, add_progress, progress_flag
from sim.errors import LlmsimError

if TYPE_CHECKING:  # the library loads when the command runs (see sim.cli.main)
    from sim.results.run import Results


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="simulate one scenario; print a summary; write results",
        description="Simulate a YAML scenario end to end. Writes summary.json, the "
        "resolved scenario and per-request/iteration/device/link records to --out (or "
        "the scenario's output.dir), and prints a summary table.",
    )
    p.add_argument("scenario", help="scenario YAML path or catalog name")
    add_overrides(p, "override any key, e.g. --set parallel.tp=2 (repeatable)")
    p.add_argument("--out", help="results directory (default: the scenario's output.dir)")
    p.add_argument("--format", choices=["parquet", "csv"], help="record format")
    p.add_argument("--no-records", action="store_true", help="write summary.json only")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument(
        "--trace",
        metavar="PATH",
        help="write a Chrome/Perfetto trace of the run (stage executions, requests) to PATH; "
        "output.trace: true writes trace.json into the results directory",
    )
    add_progress(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.plan import load_scenario
    from sim.results.report import summary_json, summary_table, write_results
    from sim.results.run import simulate
    from sim.results.trace import write_trace

    scenario = load_scenario(ns.scenario, ns.overrides)
    progress = progress_flag(ns.progress)
    out = ns.out or scenario.output.dir
    keep = bool(out) and scenario.output.records and not ns.no_records
    traces = [ns.trace] if ns.trace else []
    if out and scenario.output.trace:
        traces.append(str(Path(out) / "trace.json"))
    # the trace draws on the stage timeline, which is kept with the records
    results = simulate(scenario, progress=progress, records=keep or bool(traces))
    if out:
        try:
            write_results(
                results,
                out,
                ns.format or scenario.output.format,
                records=keep,
            )
        except OSError as exc:
            raise LlmsimError(f"cannot write results: {exc.strerror}", file=str(out)) from None
    for path in traces:
        try:
            write_trace(results, path)
        except OSError as exc:
            raise LlmsimError(f"cannot write the trace: {exc.strerror}", file=path) from None
    if ns.json:
        print(summary_json(results.summary))
    else:
        print(summary_table(results.summary))
        if out:
            print(f"\nresults in {out}")
        print(f"({results.wall_s:.2f} s wall, {results.events:,} events)", file=sys.stderr)
    why = all_rejected(results)
    if why is not None:  # nothing was served: a scenario that cannot run, not a result
        raise LlmsimError(why, file=scenario.file)
    return 0


def all_rejected(results: Results) -> str | None:
    """Why the run served nothing, when every request was rejected (None otherwise):
    the count, the reasons by category, and the first request's reason in full."""
    s = results.summary
    if not s.requests or s.finished or s.rejected < s.requests:
        return None
    counts = ", ".join(f"{why} ({n})" for why, n in s.reject_reasons.items())
    reasons = results.requests["reject_reason"]
    first = str(reasons.iloc[0]) if len(reasons) else ""
    detail = first.split(":", 1)[1].strip() if ":" in first else first
    return f"all {s.requests} requests were rejected: {counts}" + (
        f"; the first: {detail}" if detail else ""
    )
