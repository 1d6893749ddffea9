"""Rewrite the generated blocks of docs/fidelity.md.

    python bench/update_fidelity.py

- between `<!-- validate:begin -->` and `<!-- validate:end -->`: the error summary of a
  fresh `llmsim validate` run, per group (as run and held out of the runtime fit) and
  per family of entries;
- between `<!-- runtimes:begin -->` and `<!-- runtimes:end -->`: every runtime of
  `runtimes/`, each setting it makes with its value and its source, and the fitted
  ones with the figure the fit chose (bench/fit_runtimes.py).
`--runtimes-only` rewrites the second block alone (a runtime's text changed, no figure).
The prose around the blocks is kept (update it by hand when the numbers tell a
different story).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.cli.validate import group_table  # noqa: E402
from sim.fidelity.logo import fit_table  # noqa: E402
from sim.fidelity.validate import validate  # noqa: E402
from sim.spec.catalog import load_runtime  # noqa: E402
from sim.spec.runtime import RuntimeSpec  # noqa: E402

DOC = ROOT / "docs" / "fidelity.md"
FAMILIES = (
    ("vLLM Table 1 memory, KV per token", "vllm_table1_memory", "vllm_opt13b"),
    ("gpt-fast batch-1 decode", "gptfast_"),
    ("TensorRT-LLM max throughput (trtllm-bench)", "trtllm_"),
    ("DistServe Fig. 1 goodput", "distserve_"),
    ("InferSim vLLM serving under load", "infsim_"),
    ("LLMServingSim vLLM 0.19 summaries", "lss_"),
    ("LLMServingSim trace replay (distributions)", "trace_llmservingsim"),
    ("DataCrunch SGLang serving", "datacrunch_"),
    ("SGLang v0.3 blog (serving, offline)", "sglang030_"),
    ("vLLM 0.19 concurrency 8, 20k prompts", "vllm0191_llama31"),
    ("Splitwise vLLM iteration times", "splitwise_vllm"),
    ("TensorRT-LLM v0.5 first token, v0.6.1 static", "tensorrtllm_"),
    ("vLLM 0.5.3 light load", "vllm053_"),
    ("vLLM 0.19 ITL against context", "vllm0191_decode"),
    ("custom all-reduce kernels", "sglang_pr2904"),
    ("FlexGen offloading", "flexgen_"),
)
SETTINGS = (
    ("host", "host"),
    ("kernel_launch_s", "kernel_launch"),
    ("graphs", "graphs"),
    ("fused", "fused"),
    ("io_dtype", "io_dtype"),
    ("all_reduce", "all_reduce"),
    ("custom_max_bytes", "custom_max_bytes"),
    ("custom_latency_s", "custom_latency"),
    ("custom_bandwidth", "custom_bandwidth"),
    ("admission", "admission"),
    ("overlap_weight_gather", "overlap_weight_gather"),
    ("kv_cache", "kv_cache"),
)


def _replace(text: str, name: str, lines: list[str]) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + "\n".join(lines) + "\n" + text[stop:]


def results_block() -> tuple[list[str], Any]:
    report = validate()
    s = report.summary
    lines = [
        f"**{s.n_numeric} rows with an error, median |error| {s.median_abs_error_pct:.1f}%, "
        f"p90 {s.p90_abs_error_pct:.1f}%**; {s.n_not_reproducible} rows not reproducible "
        f"(each says why), {s.n_skipped} skipped; {report.wall_s:.0f} s wall on this "
        "machine. By group, as run and with the group held out of the runtime fit:",
        "",
        "```",
        group_table(report),
        "```",
        "",
        "By family of entries:",
        "",
        "| family | rows | median abs error | p90 abs error | median signed |",
        "|---|---|---|---|---|",
    ]
    for name, *prefixes in FAMILIES:
        errs = [
            e
            for r in report.rows
            if (e := r.error_pct) is not None and r.id.startswith(tuple(prefixes))
        ]
        if not errs:
            continue
        a = np.abs(errs)
        lines.append(
            f"| {name} | {len(errs)} | {np.median(a):.1f}% | {np.percentile(a, 90):.1f}% "
            f"| {np.median(errs):+.1f}% |"
        )
    return lines, report


def _value(rt: RuntimeSpec, field: str) -> str:
    v = getattr(rt, field)
    if field == "host":
        return (
            f"fixed {v.fixed_s * 1e3:g} ms, per sequence {v.per_sequence_s * 1e6:g} us, "
            f"per token {v.per_token_s * 1e6:g} us, overlap {str(v.overlap).lower()}"
        )
    if field == "graphs":
        if not v.enabled:
            return "off"
        sizes = v.captured()
        shown = "every shape" if not v.padding else f"{len(sizes)} sizes up to {sizes[-1]}"
        return f"on ({'prefill, decode and mixed steps' if v.mixed else 'decode steps'}; {shown})"
    if field.endswith("_s"):
        return f"{v * 1e6:g} us"
    if field == "custom_max_bytes":
        return f"{v / 2**20:g} MiB"
    if field == "custom_bandwidth":
        return f"{v / 1e9:g} GB/s"
    if isinstance(v, tuple):
        return ", ".join(v) or "none"
    return str(v)


def runtimes_block() -> list[str]:
    table = fit_table()
    bare = RuntimeSpec()
    lines: list[str] = []
    for path in sorted((ROOT / "runtimes").glob("*.yaml")):
        rt = load_runtime(path.stem)
        lines += [f"### `{rt.name}`: {rt.engine or rt.description}", "", rt.description, ""]
        lines += ["| setting | value | source |", "|---|---|---|"]
        for field, key in SETTINGS:
            if getattr(rt, field) == getattr(bare, field):
                continue
            sources = [
                f"{k}: {v}" if k != key else v
                for k, v in rt.sources.items()
                if k.split(".")[0] == key
            ]
            text = " · ".join(sources).replace("|", "\\|") or "(none)"
            lines.append(f"| `{key}` | {_value(rt, field)} | {text} |")
        fit = table.get(rt.name)
        if fit and fit.get("rows"):
            shown = ", ".join(
                f"`{p}` = {v * 1e6:g} us" for p, v in zip(fit["params"], fit["fitted"], strict=True)
            )
            held = "; ".join(
                f"without {g}: " + ", ".join(f"{v * 1e6:g} us" for v in pt)
                for g, pt in sorted(fit["logo_points"].items())
            )
            lines += [
                "",
                f"Fitted on {len(fit['rows'])} dev rows: {shown}. Refitted with "
                f"each group left out: {held}.",
            ]
        elif rt.fitted:
            lines += [
                "",
                "Its `fitted:` parameters have no dev rows to fit on; the file's "
                "values stand as written (no evidence for or against them).",
            ]
        lines.append("")
    return lines


def main() -> int:
    runtimes_only = "--runtimes-only" in sys.argv[1:]  # the runtimes block alone: no validate
    results, report = (None, None) if runtimes_only else results_block()
    text = DOC.read_text()  # read after the long run: edits made meanwhile are kept
    if results is not None:
        text = _replace(text, "validate", results)
    text = _replace(text, "runtimes", runtimes_block())
    DOC.write_text(text)
    shown = f": median {report.summary.median_abs_error_pct:.1f}%" if report else ""
    print(f"updated {DOC.relative_to(ROOT)}{shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
