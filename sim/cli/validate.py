"""`llmsim validate`: run the fidelity suite and print simulated against measured figures."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sim.cli.options import print_json
from sim.results.table import aligned

if TYPE_CHECKING:  # the command imports the library only when it runs
    from sim.fidelity.validate import Report, Row

NOTE_WIDTH = 60
METRIC_WIDTH = 30


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="run the fidelity suite: simulated vs published measurements, error table",
        description="Rebuild each reproducible setup of a measurements file as a scenario, "
        "simulate it, and print measured against simulated figures with their error "
        "((simulated - measured) / measured). Rows that cannot be reproduced say why. "
        "docs/fidelity.md explains how each setup is modelled.",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="measurements YAML (default: the measurements that ship with llmsim, "
        "sim/fidelity/measurements.yaml, each with its source)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--only",
        metavar="ID_SUBSTRING",
        help="only the entries whose id contains this (case-insensitive)",
    )
    p.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="only the entries of this group (repeatable): C_serving, D_measured_here, "
        "F_flexgen_offloading, P1_serving_load, P1_trace_replay, P2_step_timing, "
        "P3_tp_scaling, P4_moe, P5_new_hardware, R_runtime_kernels",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a rougher, several times faster run: capacity searches (DistServe's "
        "goodput) with one seed and a 5%% bisection, throughput benchmarks capped at "
        "2,000 requests",
    )
    p.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"


def _short(text: str, width: int = NOTE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cells(row: Row) -> list[str]:
    err = row.error_pct
    note = row.note if row.status != "not reproducible" else f"not reproducible: {row.note}"
    return [
        row.id,
        _short(row.metric, METRIC_WIDTH),
        _short(row.unit, 12),
        _fmt(row.measured),
        _fmt(row.simulated),
        "-" if err is None else f"{err:+.1f}",
        _short(note),
    ]


def table(report: Report) -> str:
    """The rows as an aligned text table, then the error summary."""
    header = ["id", "metric", "unit", "measured", "simulated", "error %", "note"]
    lines = aligned(header, [_cells(r) for r in report.rows], left=(0, 1, 2, 6))
    s = report.summary
    med = "-" if s.median_abs_error_pct is None else f"{s.median_abs_error_pct:.1f}%"
    p90 = "-" if s.p90_abs_error_pct is None else f"{s.p90_abs_error_pct:.1f}%"
    lines += [
        "",
        f"{s.n} rows: {s.n_numeric} simulated, {s.n_not_reproducible} not reproducible, "
        f"{s.n_skipped} skipped",
        f"median |error| {med}, p90 |error| {p90} (over the {s.n_numeric} simulated rows)",
    ]
    return "\n".join(lines)


def group_table(report: Report) -> str:
    """Median and p90 |error| per group, as run and with the group left out of the
    runtime fit (sim.fidelity.logo)."""
    from sim.fidelity.logo import group_errors

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}%"

    header = ["group", "rows", "median", "p90", "held-out median", "held-out p90"]
    cells = [
        [
            g.group,
            str(g.rows),
            *(pct(v) for v in (g.median_pct, g.p90_pct, g.logo_median_pct, g.logo_p90_pct)),
        ]
        for g in group_errors(report)
    ]
    return "\n".join(aligned(header, cells, left=(0,)))


def run(ns: argparse.Namespace) -> int:
    from sim.fidelity.validate import validate

    report = validate(ns.data, only=ns.only, groups=tuple(ns.group or ()), quick=ns.quick)
    if ns.json:
        print_json(report.to_dict())
        return 0
    print(table(report))
    print()
    print(
        "by group; held out: each group predicted by the runtimes fitted without it "
        "(bench/fit_runtimes.py)"
    )
    print(group_table(report))
    print(f"({report.wall_s:.1f} s wall; data {report.data})", file=sys.stderr)
    return 0
