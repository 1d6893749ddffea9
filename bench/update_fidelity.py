"""Rewrite the generated block of docs/fidelity.md from a fresh `llmsim validate` run.

    python bench/update_fidelity.py

The block between `<!-- validate:begin -->` and `<!-- validate:end -->` is replaced by
the table and the error summary; the prose around it is kept (update it by hand when
the numbers tell a different story).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.cli.validate import table  # noqa: E402
from sim.fidelity.validate import validate  # noqa: E402

DOC = ROOT / "docs" / "fidelity.md"
BEGIN, END = "<!-- validate:begin -->", "<!-- validate:end -->"
GROUPS = (
    ("memory (vLLM Table 1, KV per token)", lambda i: i.startswith("vllm")),
    ("gpt-fast batch-1 decode", lambda i: i.startswith("gptfast")),
    ("TensorRT-LLM max throughput, H100", lambda i: i.startswith("trtllm") and "H100" in i),
    ("TensorRT-LLM max throughput, H200", lambda i: i.startswith("trtllm") and "H200" in i),
    ("DistServe Fig. 1 goodput", lambda i: i.startswith("distserve")),
)


def main() -> int:
    report = validate()  # what `llmsim validate` prints, run once
    data = report.summary
    lines = [
        "```",
        table(report).rstrip(),
        "```",
        "",
        f"**Median |error| {data.median_abs_error_pct:.1f}%, p90 |error| "
        f"{data.p90_abs_error_pct:.1f}%**, over the {data.n_numeric} rows that "
        f"have a simulated number; {data.n_not_reproducible} rows cannot be "
        f"reproduced, {data.n_skipped} skipped. By group:",
        "",
        "| group | rows | median abs error | max abs error |",
        "|---|---|---|---|",
    ]
    for name, match in GROUPS:
        errs = [abs(e) for r in report.rows if (e := r.error_pct) is not None and match(r.id)]
        if errs:
            lines.append(f"| {name} | {len(errs)} | {np.median(errs):.1f}% | {max(errs):.1f}% |")
    text = DOC.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[stop:])
    print(f"updated {DOC.relative_to(ROOT)}: median {data.median_abs_error_pct:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
