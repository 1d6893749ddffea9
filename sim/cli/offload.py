"""`llmsim offload-search`: FlexGen's policy search for a scenario's model on an offloading
machine; prints the best policies (LP prediction beside the simulator's) and the chosen
one as a YAML `offload:` snippet."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from sim.cli.options import add_overrides, print_json
from sim.errors import LlmsimError
from sim.results.table import aligned

if TYPE_CHECKING:
    from sim.studies.offload_lp import Policy
    from sim.studies.offload_search import SearchResult


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "offload-search",
        help="FlexGen's offload policy search: placement of weights/KV/activations and "
        "block shape, by linear programming, checked in the simulator",
        description="For each block shape (GPU batch size × GPU batches, powers of two that "
        "could fit; CPU attention off and on), solve the linear program over the fractions of "
        "weights, KV cache and activations on GPU, host DRAM and disk that minimises the "
        "block's time under every tier's capacity (FlexGen's cost model: within a layer the "
        "transfers and compute overlap perfectly). Rank the shapes by the objective, run the "
        "best in the simulator, print them and the winner as an `offload:` snippet. Prompt "
        "and output lengths are the workload's longest.",
    )
    p.add_argument("scenario", help="scenario YAML path or catalog name")
    p.add_argument(
        "--objective",
        choices=("throughput", "latency"),
        default="throughput",
        help="throughput: generated tokens/s of a block (default); latency: seconds per "
        "generated token",
    )
    p.add_argument("--top", type=int, default=5, help="policies to show and simulate (5)")
    p.add_argument("--gpu-batch-sizes", metavar="N,N,...", help="(default: powers of two)")
    p.add_argument("--gpu-batches", metavar="N,N,...", help="(default: powers of two)")
    p.add_argument(
        "--cpu-attention",
        choices=("both", "on", "off"),
        default="both",
        help="try attention over host-resident KV on the CPU (default both)",
    )
    p.add_argument(
        "--max-block", type=int, default=2048, help="largest block the default grid tries"
    )
    p.add_argument(
        "--representative",
        action="store_true",
        help="price one decode step at the mean context, n−1 times (FlexGen's "
        "approximation), instead of every step at its own context",
    )
    p.add_argument(
        "--no-simulate", action="store_true", help="skip the simulator check of each policy"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="simulate the best policies in N worker processes (default 1: in this process)",
    )
    add_overrides(p, "override any key, e.g. --set workload.prompt.value=1024 (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LlmsimError(
            f"expected integers separated by commas, got {text!r}", key=flag
        ) from None
    if not values or min(values) < 1:
        raise LlmsimError(f"expected positive integers, got {text!r}", key=flag)
    return values


def run(ns: argparse.Namespace) -> int:
    from sim.plan import load_scenario
    from sim.studies.offload_search import search

    scenario = load_scenario(ns.scenario, ns.overrides)
    cpu = {"both": (False, True), "on": (True,), "off": (False,)}[ns.cpu_attention]
    if ns.max_block < 1:
        raise LlmsimError(f"expected a positive integer, got {ns.max_block}", key="--max-block")
    result = search(
        scenario,
        ns.objective,
        _ints(ns.gpu_batch_sizes, "--gpu-batch-sizes"),
        _ints(ns.gpu_batches, "--gpu-batches"),
        cpu,
        top=ns.top,
        max_block=ns.max_block,
        representative=ns.representative,
        simulate=not ns.no_simulate,
        jobs=ns.jobs,
    )
    if ns.json:
        document: dict[str, Any] = {
            "scenario": scenario.name,
            "model": scenario.model.name,
            "cluster": scenario.cluster.name,
            **result.to_dict(),
        }
        print_json(document)
        return 0
    print(report(result, scenario.model.name, scenario.cluster.name))
    return 0


def _pct(v: tuple[float, float, float]) -> str:
    return "/".join(f"{x * 100:.3g}" for x in v)


def _row(i: int, p: Policy) -> list[str]:
    o = p.offload
    sim = p.simulated_throughput
    gb = {t: f"{p.tier_bytes[t] / 1e9:.1f}" for t in ("gpu", "cpu", "disk")}
    return [
        str(i),
        str(o.gpu_batch_size),
        str(o.gpu_batches),
        str(o.block),
        "yes" if o.cpu_attention else "no",
        _pct(o.weights),
        _pct(o.kv),
        _pct(o.activations),
        f"{p.seconds_per_token:.4g}",
        f"{p.throughput:.4g}",
        "-" if sim is None else f"{sim:.4g}",
        gb["gpu"],
        gb["cpu"],
        gb["disk"],
        p.bound,
    ]


HEADER = [
    "#",
    "gpu_bs",
    "batches",
    "block",
    "cpu_attn",
    "weights g/c/d %",
    "kv g/c/d %",
    "act g/c/d %",
    "LP s/token",
    "LP tok/s",
    "sim tok/s",
    "GPU GB",
    "CPU GB",
    "disk GB",
    "decode bound",
]


def report(result: SearchResult, model: str, cluster: str) -> str:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.studies.offload_search import offload_snippet

    cap = result.capacities
    context = "mean context" if result.representative else "every decode step"
    lines = [
        f"{model} on {cluster}: prompt {result.prompt}, output {result.output}; objective "
        f"{result.objective}; {result.shapes_feasible} of {result.shapes_solved} block "
        f"shapes feasible (decode priced at {context})",
        f"capacities: GPU {cap['gpu'] / 1e9:.1f} GB usable, DRAM {cap['cpu'] / 1e9:.0f} GB, "
        f"disk {cap['disk'] / 1e9:.0f} GB",
        "",
    ]
    lines += aligned(HEADER, [_row(i, p) for i, p in enumerate(result.policies, 1)])
    diffs = [
        abs(p.simulated_s - p.seconds) / p.simulated_s
        for p in result.policies
        if p.simulated_s is not None and p.simulated_s > 0
    ]
    if diffs:
        lines += ["", f"LP vs simulator: largest relative difference {max(diffs):.2e}"]
    lines += [
        "",
        "chosen policy (paste into the scenario; one block of requests):",
        offload_snippet(result.best).rstrip(),
    ]
    return "\n".join(lines)
