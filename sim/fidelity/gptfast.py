"""gpt-fast batch-1 decode (`gptfast_*`): one request with the source's 5-token prompt and
256 output tokens, a static batch of 1; tokens/s = 1 / median TPOT. Weights in the
entry's dtype (bf16/int8/int4), activations and KV in bf16. The source's power cap is
named in the note, not corrected for."""

from __future__ import annotations

import re
from typing import Any

from sim.fidelity.rows import (
    Options,
    Row,
    cluster_of,
    device_name,
    dtype_in,
    fixed_workload,
    model_name,
    need,
    number,
    simulate_summary,
)

GPTFAST_OUTPUT_TOKENS = 256  # long enough that the median TPOT is a steady decode step


RUNTIME = "gpt-fast"


def gptfast(entry: dict[str, Any], opts: Options) -> list[Row]:
    hardware = str(need(entry, "hardware"))
    device, model = device_name(hardware), model_name(entry)
    weights = dtype_in(str(need(entry, "precision")))
    group = re.search(r"\bG\s*=\s*(\d+)", str(entry.get("precision")))
    batch = int(number(need(entry, "workload.batch"), "workload.batch"))
    prompt = int(number(need(entry, "workload.prompt_tokens"), "workload.prompt_tokens"))
    summary = simulate_summary(
        {
            "name": entry["id"],
            "cluster": cluster_of(device),
            "model": model,
            "precision": {
                "weights": weights,
                "activations": "bf16",
                "kv": "bf16",
                "group_size": int(group.group(1)) if group else 64,
            },
            "scheduler": {"policy": "static", "batch_size": batch, "max_wait": 0},
            "runtime": opts.runtime(RUNTIME),
            "workload": fixed_workload(batch, prompt, GPTFAST_OUTPUT_TOKENS),
        }
    )
    tpot = summary.tpot_s.p50
    cap = re.search(r"\(([^)]*power[^)]*)\)", hardware)
    note = (
        f"{model} on {device}: {weights} weights, bf16 activations/KV; static batch "
        f"{batch}, {prompt}-token prompt, {GPTFAST_OUTPUT_TOKENS} output tokens; "
        "1 / median TPOT"
        + (f"; source {cap.group(1)}: simulated at full power, not corrected" if cap else "")
    )
    return [
        Row(
            entry["id"],
            "batch-1 decode tokens/s",
            number(need(entry, "value")),
            1.0 / tpot if tpot else None,
            str(entry.get("unit", "tokens/s")),
            note + f"; runtime {RUNTIME}",
            runtime=RUNTIME,
        )
    ]
