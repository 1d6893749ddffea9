"""`llmsim capacity`: the highest arrival rate at which a scenario meets its SLOs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sim.cli.options import add_overrides, add_progress, progress_flag
from sim.errors import LlmsimError
from sim.results.table import aligned, fmt_num

if TYPE_CHECKING:
    import pandas as pd

    from sim.studies.capacity import CapacityResult


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capacity",
        help="the highest arrival rate that still meets the SLOs, with a latency curve",
        description="Search the arrival rate (bracket, then bisect) for the highest load at "
        "which the mean SLO attainment over several seeds stays at the target; attainment is "
        "the share of requests in the measurement window (warm-up and drain trimmed) that "
        "finished within every bound of their class, and 0 for a run whose queue grew "
        "through the window (unstable) or that was offered more than the maximum throughput "
        "(the same requests served all at once). Runs are lengthened (workload.requests "
        "raised) until the window is long enough to judge stability. Prints the capacity "
        "with a 95%% interval, the probes and a throughput-latency curve; writes "
        "capacity.json, curve.png and the resolved scenario to --out.",
    )
    p.add_argument("scenario", help="scenario YAML path or catalog name")
    p.add_argument("--target", type=float, default=0.99, help="attainment to hold (0.99)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per probe (3)")
    p.add_argument("--tolerance", type=float, default=0.02, help="relative bracket width (0.02)")
    p.add_argument("--warmup", type=float, default=0.1, help="share of arrivals trimmed first")
    p.add_argument("--drain", type=float, default=0.1, help="share of arrivals trimmed last")
    p.add_argument("--max-probes", type=int, default=40, help="loads the search may try (40)")
    p.add_argument(
        "--loads",
        default="0.25,0.5,0.75,0.9,1,1.1,1.25",
        help="curve loads as multiples of the capacity, comma-separated ('' for none)",
    )
    add_overrides(p, "override any key, e.g. --set parallel.tp=4 (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (1)")
    p.add_argument("--out", help="output directory (default results/capacity-<name>)")
    p.add_argument("--json", action="store_true", help="print capacity.json's object")
    add_progress(p)
    p.set_defaults(func=run)


def _loads(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LlmsimError(
            f"expected numbers separated by commas (got {text!r})", key="--loads"
        ) from None
    if any(v <= 0 for v in values):
        raise LlmsimError(f"loads must be > 0 (got {text!r})", key="--loads")
    return values


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.plan import load_scenario
    from sim.results.plots import plot_curve
    from sim.results.report import summary_json
    from sim.studies.capacity import capacity, result_slos

    scenario = load_scenario(ns.scenario, ns.overrides)
    loads = _loads(ns.loads)
    result = capacity(
        scenario,
        target=ns.target,
        seeds=ns.seeds,
        warmup=ns.warmup,
        drain=ns.drain,
        tolerance=ns.tolerance,
        max_probes=ns.max_probes,
        jobs=ns.jobs,
        loads=loads,
        progress=progress_flag(ns.progress),
    )
    out = Path(ns.out or f"results/capacity-{scenario.name}")
    document = summary_json(result.to_dict())
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "capacity.json").write_text(document + "\n")
        (out / "scenario.resolved.yaml").write_text(
            "# The scenario as searched (factor 1): defaults filled in, references inlined.\n"
            + yaml.safe_dump(scenario.resolved_dict(), sort_keys=False)
        )
        if len(result.curve):
            plot_curve(
                result.curve,
                result_slos(scenario),
                out / "curve.png",
                capacity_rps=result.capacity_rps or None,
                title=f"{scenario.name}: latency vs offered load",
            )
    except OSError as exc:
        raise LlmsimError(f"cannot write results: {exc.strerror}", file=str(out)) from None
    if ns.json:
        print(document)
        return 0
    print(report(result, scenario_slo_text(scenario)))
    print(f"\nresults in {out}")
    return 0


def scenario_slo_text(scenario: Any) -> str:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.studies.capacity import result_slos

    parts = []
    for slo in result_slos(scenario):
        bounds = [
            f"{name} {_ms(v)}"
            for name, v in (("TTFT", slo.ttft_s), ("TPOT", slo.tpot_s), ("e2e", slo.e2e_s))
            if v is not None
        ]
        if bounds:
            parts.append(", ".join(bounds))
    return "; ".join(parts) or "none"


def _ms(v: float) -> str:
    return f"{v:g} s" if v >= 1 else f"{v * 1e3:g} ms"


def report(r: CapacityResult, slo_text: str) -> str:
    """The capacity with its interval, the probes in order, and the curve table."""
    lo, hi = r.interval_rps
    hi_text = f"{hi:,.3f}" if hi is not None else "?"
    lines = [
        f"capacity of {r.scenario}: {r.capacity_rps:,.3f} req/s "
        f"(95% interval {lo:,.3f} – {hi_text} req/s)",
        f"  SLO {slo_text}; target attainment {r.target:.2%} over seeds "
        f"{', '.join(map(str, r.seeds))}; window: arrivals after the first {r.warmup:.0%} "
        f"and before the last {r.drain:.0%}",
    ]
    b_lo, b_hi = r.bracket_rps
    b_hi_text = f"{b_hi:,.3f}" if b_hi is not None else "?"
    state = "converged" if r.converged else f"not converged: {r.note}"
    lines.append(
        f"  bracket {b_lo:,.3f} – {b_hi_text} req/s (tolerance {r.tolerance:.1%}), "
        f"{len(r.probes)} probes, {state}"
    )
    lines.append("  " + _runs_text(r))
    per_hour = f"${r.usd_per_hour:,.2f}/h" if r.usd_per_hour is not None else "no price"
    cost = r.usd_per_million_output_tokens
    lines.append(
        f"  at capacity: goodput {fmt_num(r.goodput_rps, ',.3f')} req/s, {r.devices} "
        f"device{'s' if r.devices != 1 else ''}, "
        f"{per_hour}, {'$' + format(cost, ',.3f') if cost is not None else '-'} per million "
        "output tokens"
    )
    for w in r.warnings:
        lines.append(f"  note: {w}")
    lines += ["", "probes (in order):", _probe_table(r)]
    if any(p.unstable_seeds for p in r.probes):
        lines.append(
            "  u: a seed judged unstable (its queue grew through the window, or the rate is "
            "above the maximum throughput): its attainment counts as 0"
        )
    if len(r.curve):
        lines += ["", "throughput–latency curve (means over seeds):", curve_table(r.curve)]
    return "\n".join(lines)


def _runs_text(r: CapacityResult) -> str:
    """How long the runs were, and the maximum throughput they were held to."""
    n = r.requests_per_run
    runs = f"runs of {n:,.0f} requests" if n is not None else "runs"
    if r.size > 1:
        runs += f" (the workload x{r.size:.3g}, long enough to judge stability)"
    top = r.max_throughput_rps
    most = f"{top:,.3f} req/s" if top is not None else "not measured"
    return f"{runs}; maximum throughput (the requests all at once) {most}"


def _probe_table(r: CapacityResult) -> str:
    header = (
        "#",
        "phase",
        "req/s",
        "×rate",
        "requests",
        "attainment",
        "± se",
        "per seed",
        "verdict",
    )
    rows = []
    for i, p in enumerate(r.probes, start=1):
        sure = p.confident_pass or p.confident_fail
        seeds = " ".join(
            f"{run.attainment:.3f}" + ("u" if not run.stable else "") for run in p.runs
        )
        verdict = "pass" if p.passed else "fail"
        if p.unstable_seeds:
            verdict += " unstable"
        requests = p.mean("requests")
        rows.append(
            (
                str(i),
                p.phase,
                f"{p.rate_rps:,.3f}",
                f"{p.factor:.4g}",
                f"{requests:,.0f}" if requests else "-",
                f"{p.attainment:.4f}",
                f"{p.attainment_se:.4f}",
                seeds,
                verdict + ("" if sure else " (unsure)"),
            )
        )
    return "\n".join(aligned(header, rows))


def _ms_pair(p50: float | None, p99: float | None) -> str:
    return f"{fmt_num(p50, ',.1f', 1e3)}/{fmt_num(p99, ',.1f', 1e3)}"


def curve_table(curve: pd.DataFrame) -> str:
    header = (
        "load",
        "offered",
        "throughput",
        "goodput",
        "attain",
        "unstable",
        "TTFT p50/p99 ms",
        "TPOT p50/p99 ms",
        "$/M tok",
    )
    rows = []
    for row in curve.to_dict(orient="records"):
        rows.append(
            (
                f"{row['load']:.2f}",
                f"{row['offered_rps']:,.3f}",
                fmt_num(row["throughput_rps"], ",.3f"),
                fmt_num(row["goodput_rps"], ",.3f"),
                f"{row['attainment']:.4f}",
                f"{row.get('unstable', 0.0):.0%}",
                _ms_pair(row["ttft_p50_s"], row["ttft_p99_s"]),
                _ms_pair(row["tpot_p50_s"], row["tpot_p99_s"]),
                fmt_num(row["usd_per_million_output_tokens"], ",.3f"),
            )
        )
    return "\n".join(aligned(header, rows))
