"""`llmsim compare`: run variants of a scenario side by side; print one table, write
compare.json, compare.csv, a Gantt chart and metric bar charts (and traces)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.options import EXIT_BAD_INPUT, add_overrides, add_progress, progress_flag
from sim.errors import LlmsimError


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run variants of a scenario side by side; table + plots",
        description="Run variants of one scenario side by side, each the scenario with some\n"
        "keys changed, in parallel processes. Prints one table (throughput, TTFT and TPOT\n"
        "percentiles, bubble fraction, per-stage utilisation, link use, peak memory) and\n"
        "writes compare.json, compare.csv, gantt.png (each replica's stages × time per\n"
        "variant, one time axis for all) and metrics.png to --out. Without --vary, the\n"
        "scenario's compare.vary list is used.",
        epilog="examples:\n"
        "  llmsim compare s.yaml --vary parallel.pipeline.schedule=fill-drain,continuous\n"
        "  llmsim compare s.yaml --vary 'scheduler={policy: vllm},{policy: sarathi}'\n"
        "  llmsim compare s.yaml --vary parallel.tp:parallel.pp=8:1,4:2,2:4\n"
        "  llmsim compare s.yaml --vary parallel.pp=1,2 --vary workload.arrival.rate=2,4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", help="scenario YAML path or catalog name")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="vary one key over YAML values (split on top-level commas); "
        "K1:K2=A1:A2,B1:B2 varies keys together; several --vary form a product",
    )
    add_overrides(p, "override a key in every variant (applied after the variant's own keys)")
    p.add_argument("--out", help="output directory (default: results/compare-<scenario name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: min(CPUs, variants); 1 runs in this process)",
    )
    p.add_argument(
        "--window",
        metavar="START:END",
        help="Gantt window in simulated seconds, the same for every variant (default: the "
        "scenario's compare.window_s, else one length for all: the longest of the variants' "
        "windows of about 40 stage executions per replica around the middle of the run)",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="also write a Chrome/Perfetto trace per variant (trace-<#>.json)",
    )
    add_progress(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.plan import load_scenario
    from sim.spec.scenario import Scenario
    from sim.studies.compare import run_variants, table, to_json, write_outputs
    from sim.studies.variants import expand, parse_vary, parse_window

    axes = [parse_vary(spec, "--vary") for spec in ns.vary]
    window = parse_window(ns.window) if ns.window else None
    base: Scenario | None = None
    try:
        base = load_scenario(ns.scenario, ns.overrides)
    except LlmsimError as exc:
        # a file that cannot be read fails every variant; a bad key may be what --vary fixes
        if not axes or exc.key is None:
            raise
    vary = list(ns.vary)
    if not axes:
        assert base is not None
        vary = list(base.compare.vary) if base.compare else []
        if not vary:
            raise LlmsimError(
                "nothing to compare: give --vary KEY=V1,V2,... or list them under compare.vary",
                file=base.file,
            )
        try:
            axes = [parse_vary(spec, "compare.vary") for spec in vary]
        except LlmsimError as exc:
            raise exc.at(file=base.file) from None
    if window is None and base is not None and base.compare is not None:
        window = base.compare.window_s
    variants = expand(axes)
    name = base.name if base is not None else Path(ns.scenario).stem
    out = Path(ns.out or f"results/compare-{name}")

    results = run_variants(
        ns.scenario,
        variants,
        ns.overrides,
        jobs=ns.jobs,
        window_s=window,
        trace_dir=out if ns.trace else None,
        progress=progress_flag(ns.progress),
    )
    document = to_json(results, name, vary, ns.overrides)
    try:
        written = write_outputs(results, out, document, title=name)
    except OSError as exc:
        raise LlmsimError(f"cannot write results: {exc.strerror}", file=str(out)) from None
    if ns.json:
        from sim.cli.options import print_json

        print_json(document)
    else:
        print(f"scenario {name}: {len(variants)} variant(s)\n")
        print(table(results))
        print(f"\nresults in {written.out_dir}: " + ", ".join(f.name for f in written.files))
    return 0 if any(r.ok for r in results) else EXIT_BAD_INPUT
