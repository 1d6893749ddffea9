"""TensorRT-LLM maximum throughput (`trtllm_*`): every request at t = 0, fixed lengths,
one dtype for weights, activations and KV (fp8), Sarathi-style iterations that mix
decodes with prefill chunks under a token budget of 8192 (TensorRT-LLM's default
max_num_tokens) and at most 2048 sequences (its default max batch); output tokens over
the makespan."""

from __future__ import annotations

import re
from typing import Any

from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
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

RUNTIME = "tensorrt-llm-pytorch"  # trtllm-bench's default backend
TRTLLM_MAX_BATCH = 2048  # TensorRT-LLM's default max_batch_size
TRTLLM_MAX_NUM_TOKENS = 8192  # its default max_num_tokens (chunked context budget)


def trtllm(entry: dict[str, Any], opts: Options) -> list[Row]:
    device, model = device_name(str(need(entry, "hardware"))), model_name(entry)
    dtype = dtype_in(str(need(entry, "precision")))
    prompt = int(number(need(entry, "workload.input_tokens"), "workload.input_tokens"))
    output = int(number(need(entry, "workload.output_tokens"), "workload.output_tokens"))
    published = int(number(need(entry, "workload.num_requests"), "workload.num_requests"))
    requests = min(published, opts.max_requests) if opts.max_requests else published
    parallel = str(entry.get("parallelism", ""))
    tp = int(m.group(1)) if (m := re.search(r"TP(\d+)", parallel)) else 1
    pp = int(m.group(1)) if (m := re.search(r"PP(\d+)", parallel)) else 1
    summary = simulate_summary(
        {
            "name": entry["id"],
            "cluster": cluster_of(device),
            "model": model,
            "precision": {"weights": dtype, "activations": dtype, "kv": dtype},
            "parallel": {"tp": tp, "pp": pp},
            "scheduler": {
                "policy": "sarathi",
                "max_num_seqs": TRTLLM_MAX_BATCH,
                "chunk_size": TRTLLM_MAX_NUM_TOKENS,
            },
            "runtime": opts.runtime(RUNTIME),
            "workload": fixed_workload(requests, prompt, output),
        }
    )
    note = (
        f"{model} tp{tp} pp{pp} on {device}: {dtype} weights/activations/KV; sarathi "
        f"(decodes + prefill chunks, budget {TRTLLM_MAX_NUM_TOKENS} tokens, "
        f"<= {TRTLLM_MAX_BATCH} seqs); {requests} requests at t=0"
        + (f" (of {published})" if requests < published else "")
        + f", {prompt} in / {output} out; output tokens / makespan; runtime {RUNTIME}"
    )
    measured = number(need(entry, "value"))
    if summary.finished < requests:
        reasons = ", ".join(summary.reject_reasons) or "unfinished"
        return [
            Row(
                entry["id"],
                "output tok/s",
                measured,
                None,
                "tokens/s",
                f"{summary.finished}/{requests} finished ({reasons}); {note}",
                NOT_REPRODUCIBLE,
                runtime=RUNTIME,
            )
        ]
    return [
        Row(
            entry["id"],
            "output tok/s",
            measured,
            summary.output_tokens_per_s,
            "tokens/s",
            note,
            runtime=RUNTIME,
        )
    ]
