"""Derive the per-request serving traces `llmsim validate` replays, shipped inside the
package (`sim/fidelity/traces/llmservingsim-<gpu>-<model>.csv`), from the developers'
copy of LLMServingSim's vLLM 0.19 runs (`../shared/data/serving-traces/llmservingsim/
<GPU>/<model>/`: requests.jsonl and meta.json).

One CSV per run, readable as a plain workload trace (`arrival_s,prompt_tokens,
output_tokens`), with the measured TTFT and TPOT of each request beside it and the
engine's exact settings (from meta.json) on a `# settings:` comment line:

- arrival_s: queued_ts − the run's first queued_ts (the engine's clock, the anchor
  LLMServingSim's bench/core/validate.py measures TTFT from), rows in arrival order;
- ttft_s = first_token_ts − queued_ts; tpot_s = (last_token_ts − first_token_ts) /
  max(1, output_toks − 1) (the same validate.py's definitions).

    python bench/derive_serving_traces.py            # rewrite the shipped files
    python bench/derive_serving_traces.py --check    # exit 1 if one is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.fidelity.replay import TRACES, trace_name  # noqa: E402

SOURCE = ROOT.parent / "shared" / "data" / "serving-traces" / "llmservingsim"
UPSTREAM = "LLMServingSim (github.com/casys-kaist/LLMServingSim, commit 5daddb21, MIT licence)"
COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tpot_s")


def runs(source: Path = SOURCE) -> list[Path]:
    """The run folders (<GPU>/<model>/) that hold a requests.jsonl, in name order."""
    return sorted(p.parent for p in source.glob("*/*/requests.jsonl"))


def settings(meta: dict[str, Any], gpu: str) -> dict[str, Any]:
    """The engine's settings as the replay needs them, from meta.json."""
    kwargs = meta["engine_kwargs"]
    kv = meta.get("kv_cache") or {}
    hardware = meta.get("hardware") or {}
    out: dict[str, Any] = {
        "gpu": hardware.get("device_name") or gpu,
        "model": meta["model"],
        "vllm_version": meta["vllm_version"],
        **{
            k: kwargs.get(k)
            for k in (
                "tensor_parallel_size",
                "data_parallel_size",
                "enable_expert_parallel",
                "max_num_seqs",
                "max_num_batched_tokens",
                "max_model_len",
                "dtype",
                "kv_cache_dtype",
            )
        },
    }
    for key in ("block_size", "num_gpu_blocks", "gpu_memory_utilization", "enable_prefix_caching"):
        if kv.get(key) is not None:
            out[key] = kv[key]
    out["dataset"] = meta.get("dataset_path")
    out["num_requests"] = meta.get("num_requests")
    return out


def derived(run: Path) -> str:
    """The shipped CSV text of one run folder."""
    gpu, model = run.parent.name, run.name
    meta = json.loads((run / "meta.json").read_text())
    rows = [json.loads(line) for line in (run / "requests.jsonl").read_text().splitlines() if line]
    start = min(r["queued_ts"] for r in rows)
    table = sorted(
        (
            r["queued_ts"] - start,
            int(r["input_toks"]),
            int(r["output_toks"]),
            r["first_token_ts"] - r["queued_ts"],
            (r["last_token_ts"] - r["first_token_ts"]) / max(1, int(r["output_toks"]) - 1),
        )
        for r in rows
    )
    header = [
        f"# Per-request trace of vLLM {meta['vllm_version']} serving {len(rows)} requests: "
        f"{model} on {gpu}, measured by {UPSTREAM}, bench/examples/{gpu}/{model}/vllm/.",
        "# Derived by bench/derive_serving_traces.py from ../shared/data/serving-traces/"
        f"llmservingsim/{gpu}/{model}/ (requests.jsonl, meta.json); regenerate rather than edit.",
        "# arrival_s = queued_ts - first queued_ts (engine clock); ttft_s = first_token_ts - "
        "queued_ts; tpot_s = (last_token_ts - first_token_ts) / max(1, output_toks - 1) "
        "(LLMServingSim bench/core/validate.py).",
        f"# settings: {json.dumps(settings(meta, gpu))}",
    ]
    body = [f"{a:.6f},{p},{o},{t:.6f},{d:.6f}" for a, p, o, t, d in table]
    return "\n".join([*header, ",".join(COLUMNS), *body]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the shipped files")
    args = ap.parse_args()
    found = runs()
    if not found:
        print(f"no serving traces under {SOURCE}")
        return 1
    stale = 0
    for run in found:
        path = TRACES / trace_name(run.parent.name, run.name)
        text = derived(run)
        if args.check:
            if not (path.is_file() and path.read_text() == text):
                print(f"{path} is out of date: run without --check")
                stale += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path} ({text.count(chr(10)) - 5} requests)")
    if args.check and not stale:
        print("up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
