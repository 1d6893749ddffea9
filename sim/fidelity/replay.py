"""Serving-trace replay: LLMServingSim's runs of vLLM 0.19.0 serving 300 ShareGPT
requests offered at about 10 requests/s (casys-kaist/LLMServingSim commit 5daddb21,
bench/examples/<GPU>/<model>/vllm/), replayed request for request.

The shipped trace of each run (`traces/llmservingsim-<gpu>-<model>.csv`, derived by
bench/derive_serving_traces.py) holds every request's arrival offset, prompt and output
tokens and measured TTFT and TPOT, and the engine's exact settings from its meta.json.
The scenario replays exactly those arrivals and lengths (`workload.trace`) on the
run's GPU with its settings: `sarathi` iterations (vLLM V1 chunked prefill: decodes
plus prefill chunks under a budget of `max_num_batched_tokens`), `max_num_seqs`,
`max_model_len`, the KV block size and `gpu_memory_utilization`; runtime `vllm-v1`.

Two kinds of entry use it:
- `lss_vllm019_*` (the runs' summaries in the measurements, P1_serving_load / P4_moe):
  every published figure the per-request percentiles do not repeat: mean TTFT and
  TPOT, end-to-end and queueing delay, throughput, makespan.
- `trace_llmservingsim-*` (one per shipped trace, group P1_trace_replay, added to the
  shipped measurements by `validate`): p10/p50/p90/p99 of TTFT and TPOT against the
  trace's, the two-sample Kolmogorov–Smirnov distance of each distribution (a figure
  with no error: its measured value is 0, the distance of the measurements from
  themselves), and the KV cache in tokens where meta.json records vLLM's block count.

Not modelled: prefix caching (on in these runs; ShareGPT prompts share little), and
vLLM's own KV block count (the engine takes no block count: its paged cache is sized
from `gpu_memory_utilization` by the memory plan, and the KV row compares the two).
The Qwen3-30B-A3B run (vLLM DP2 with `enable_expert_parallel`) is replayed as
`dp_attention: 2, ep: 2`: two attention ranks, each with its own sequences and KV,
whose MoE layers form one expert-parallel group with all-to-all dispatch and combine
over the node's PCIe. vLLM runs one scheduler per DP engine; llmsim's ranks share one
that splits each batch evenly, so `max_num_seqs` and the token budget are the
per-engine figures times two (balanced engines; vLLM's DP load balancing is not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    EntryError,
    Options,
    Row,
    cluster_of,
    device_name,
    need,
    number,
    unpriced_row,
)
from sim.plan import load_scenario
from sim.results.run import Results, simulate
from sim.results.slo import latency_columns
from sim.spec import catalog

RUNTIME = "vllm-v1"  # vLLM 0.19.0 runs the V1 engine with async scheduling
TRACES = Path(__file__).resolve().parent / "traces"
TRACE_GROUP = "P1_trace_replay"  # the group of the per-request distribution rows
PERCENTILES = (10, 50, 90, 99)
VLLM_BLOCK_SIZE = 16  # vLLM's default KV block size on CUDA (CacheConfig.block_size)
VLLM_MEMORY_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "fp8": "fp8", "fp8_e4m3": "fp8"}


def trace_name(gpu: str, model: str) -> str:
    """The shipped trace file of one LLMServingSim run folder (<GPU>/<model>)."""
    return f"llmservingsim-{gpu.lower()}-{model.lower()}.csv"


@dataclass(frozen=True, eq=False)
class ShippedTrace:
    path: Path
    settings: dict[str, Any]
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray


def load_shipped(path: Path) -> ShippedTrace:
    """A shipped trace: its `# settings:` line and its columns."""
    if not path.is_file():
        raise EntryError(f"no shipped trace {path.name} (run bench/derive_serving_traces.py)")
    settings: dict[str, Any] | None = None
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("# settings:"):
                settings = json.loads(line.split(":", 1)[1])
                break
    if not isinstance(settings, dict):
        raise EntryError(f"{path.name} has no '# settings:' line")
    frame = pd.read_csv(path, comment="#")
    return ShippedTrace(
        path,
        settings,
        frame["arrival_s"].to_numpy(dtype=float),
        frame["prompt_tokens"].to_numpy(dtype=np.int64),
        frame["output_tokens"].to_numpy(dtype=np.int64),
        frame["ttft_s"].to_numpy(dtype=float),
        frame["tpot_s"].to_numpy(dtype=float),
    )


def trace_of(entry: dict[str, Any]) -> Path:
    """The shipped trace of an entry, from its data file's path
    (bench/examples/<GPU>/<model>/vllm/requests.jsonl)."""
    parts = Path(str(need(entry, "source.data_file.path"))).parts
    if len(parts) < 5 or parts[-2:] != ("vllm", "requests.jsonl"):
        raise EntryError(f"cannot tell the run from data file {'/'.join(parts)!r}")
    return TRACES / trace_name(parts[-4], parts[-3])


def replay_scenario(trace: ShippedTrace, name: str, opts: Options) -> dict[str, Any]:
    """The scenario that replays a shipped trace with its engine's settings."""
    s = trace.settings
    dtype = DTYPES.get(str(s.get("dtype")))
    if dtype is None:
        raise EntryError(f"unknown dtype {s.get('dtype')!r} in {trace.path.name}")
    kv = (
        dtype if s.get("kv_cache_dtype") in (None, "auto") else DTYPES.get(str(s["kv_cache_dtype"]))
    )
    if kv is None:
        raise EntryError(f"unknown kv_cache_dtype {s['kv_cache_dtype']!r} in {trace.path.name}")
    tp = int(s.get("tensor_parallel_size") or 1)
    dp = int(s.get("data_parallel_size") or 1)
    if s.get("enable_expert_parallel"):
        # vLLM's DP x EP: dp engines, each its own sequences, KV and scheduler, whose MoE
        # layers form one expert-parallel group of dp x tp GPUs. llmsim's attention ranks
        # share one scheduler that splits each batch evenly, so the per-engine limits
        # are multiplied by dp.
        parallel = {"tp": tp, "dp_attention": dp, "ep": dp * tp, "replicas": 1}
        ranks = dp
    else:
        parallel = {"tp": tp, "replicas": dp}
        ranks = 1
    scheduler: dict[str, Any] = {
        "policy": "sarathi",
        "max_num_seqs": int(s["max_num_seqs"]) * ranks,
        "chunk_size": int(s["max_num_batched_tokens"]) * ranks,
        "block_size": int(s.get("block_size") or VLLM_BLOCK_SIZE),
        "gpu_memory_utilization": float(s.get("gpu_memory_utilization") or VLLM_MEMORY_UTILIZATION),
    }
    if s.get("max_model_len"):
        scheduler["max_model_len"] = int(s["max_model_len"])
    return {
        "name": name,
        "cluster": cluster_of(device_name(str(s["gpu"]))),
        "model": _model(str(s["model"])),
        "precision": {"weights": dtype, "activations": dtype, "kv": kv},
        "parallel": parallel,
        "scheduler": scheduler,
        "runtime": opts.runtime(RUNTIME),
        "workload": {"trace": {"path": str(trace.path), "format": "plain"}},
    }


def _model(hf_id: str) -> str:
    """The catalog model of a Hugging Face id (an alias), else of its last part."""
    try:
        return catalog.load_model(hf_id).name
    except catalog.NotInCatalog:
        return catalog.load_model(hf_id.split("/")[-1]).name


def trace_entries() -> list[dict[str, Any]]:
    """One measurement entry per shipped trace (group P1_trace_replay): `llmsim
    validate` adds them to the shipped measurements, as it does FlexGen's."""
    entries = []
    for path in sorted(TRACES.glob("llmservingsim-*.csv")):
        entries.append(
            {
                "id": f"trace_{path.stem}",
                "group": TRACE_GROUP,
                "trace": path.name,
                "metric": "TTFT and TPOT per request: p10/p50/p90/p99 and KS distance",
                "unit": "ms",
                "source": {
                    "file": f"sim/fidelity/traces/{path.name}",
                    "derived_by": "bench/derive_serving_traces.py",
                    "upstream": "casys-kaist/LLMServingSim commit 5daddb21 (MIT), "
                    "bench/examples/<GPU>/<model>/vllm/requests.jsonl and meta.json",
                },
            }
        )
    return entries


def missing_entries(entries: list[Any]) -> list[dict[str, Any]]:
    """The trace entries a measurements list does not already hold (by id)."""
    have = {e.get("id") for e in entries if isinstance(e, dict)}
    return [e for e in trace_entries() if e["id"] not in have]


def replay(entry: dict[str, Any], opts: Options) -> list[Row]:
    """The entry's published summary of a traced run, against its replay."""
    trace = load_shipped(trace_of(entry))
    run = _replayed(entry, trace, opts)
    if isinstance(run, Row):
        return [run]
    results, note = run
    return published_rows(entry, results, note)


def trace_replay(entry: dict[str, Any], opts: Options) -> list[Row]:
    """A shipped trace's per-request distributions against its replay."""
    trace = load_shipped(TRACES / str(need(entry, "trace")))
    run = _replayed(entry, trace, opts)
    if isinstance(run, Row):
        return [run]
    results, note = run
    return trace_rows(entry["id"], trace, results, note)


def _replayed(
    entry: dict[str, Any], trace: ShippedTrace, opts: Options
) -> tuple[Results, str] | Row:
    """The replay's results and note, or the row saying why it cannot be had."""
    scenario = replay_scenario(trace, entry["id"], opts)
    results = simulate(load_scenario(scenario), records=True)
    s = trace.settings
    par = scenario["parallel"]
    split = (
        f"dp_attention{par['dp_attention']} x ep{par['ep']} x tp{par['tp']} (vLLM DP "
        f"{s.get('data_parallel_size')} with enable_expert_parallel; per-engine limits x "
        f"{par['dp_attention']})"
        if "ep" in par
        else f"tp{par['tp']}" + (f" x {par['replicas']} replicas" if par["replicas"] > 1 else "")
    )
    note = (
        f"replay of {trace.path.name}: {len(trace.arrival_s)} requests at their measured "
        f"arrivals and lengths; {scenario['model']} {split} on "
        f"{scenario['cluster']}, {scenario['precision']['weights']}; sarathi (vLLM V1 chunked "
        f"prefill, budget {s['max_num_batched_tokens']}, <= {s['max_num_seqs']} seqs, block "
        f"{scenario['scheduler']['block_size']}, gpu_memory_utilization "
        f"{scenario['scheduler']['gpu_memory_utilization']}); vLLM {s.get('vllm_version')} "
        f"-> runtime {RUNTIME}; prefix caching not modelled"
    )
    summary = results.summary
    if summary.finished < len(trace.arrival_s):
        why = ", ".join(summary.reject_reasons) or "unfinished"
        reason = f"{summary.finished}/{len(trace.arrival_s)} finished ({why}); {note}"
        return replace(unpriced_row(entry, reason, NOT_REPRODUCIBLE), runtime=RUNTIME)
    return results, note


def published_rows(entry: dict[str, Any], results: Results, note: str) -> list[Row]:
    """The entry's own figures that the trace percentiles do not repeat."""
    value = need(entry, "value")
    s = results.summary
    lat = latency_columns(results.requests)
    queue = lat["queue_s"].to_numpy(dtype=float)

    def ms(path: str) -> float:
        node: Any = value
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                raise EntryError(f"entry has no value.{path}")
            node = node[key]
        return number(node, f"value.{path}")

    figures: list[tuple[str, str, float | None, str]] = [
        ("ttft_ms.mean", "TTFT mean", _ms(s.ttft_s.mean), "ms"),
        ("tpot_ms.mean", "TPOT mean", _ms(s.tpot_s.mean), "ms"),
        ("e2e_ms.mean", "E2E mean", _ms(s.e2e_s.mean), "ms"),
        ("e2e_ms.p50", "E2E p50", _ms(s.e2e_s.p50), "ms"),
        ("e2e_ms.p90", "E2E p90", _ms(s.e2e_s.p90), "ms"),
        ("e2e_ms.p99", "E2E p99", _ms(s.e2e_s.p99), "ms"),
        ("queue_delay_ms.mean", "queueing delay mean", float(queue.mean()) * 1e3, "ms"),
        ("queue_delay_ms.p50", "queueing delay p50", _pct(queue, 50) * 1e3, "ms"),
        ("queue_delay_ms.p90", "queueing delay p90", _pct(queue, 90) * 1e3, "ms"),
        ("queue_delay_ms.p99", "queueing delay p99", _pct(queue, 99) * 1e3, "ms"),
        ("throughput.requests_per_s", "request throughput", s.throughput_rps, "req/s"),
        ("throughput.output_tokens_per_s", "output throughput", s.output_tokens_per_s, "tok/s"),
        ("throughput.total_tokens_per_s", "total throughput", s.total_tokens_per_s, "tok/s"),
        ("makespan_s", "makespan (first arrival to last token)", s.span_s, "s"),
    ]
    return [
        Row(entry["id"], metric, ms(path), sim, unit, note, runtime=RUNTIME)
        for path, metric, sim, unit in figures
    ]


def trace_rows(rid: str, trace: ShippedTrace, results: Results, note: str) -> list[Row]:
    """Per-request distributions against the trace: percentiles and KS distances."""
    from scipy import stats  # slow to import; only these rows need it

    lat = latency_columns(results.requests)
    rows: list[Row] = []
    for label, measured, simulated in (
        ("TTFT", trace.ttft_s, lat["ttft_s"].to_numpy(dtype=float)),
        ("TPOT", trace.tpot_s, lat["tpot_s"].dropna().to_numpy(dtype=float)),
    ):
        for q in PERCENTILES:
            rows.append(
                Row(
                    rid,
                    f"{label} p{q}",
                    _pct(measured, q) * 1e3,
                    _pct(simulated, q) * 1e3,
                    "ms",
                    f"measured: the shipped trace's per-request {label}; {note}",
                    runtime=RUNTIME,
                )
            )
        distance = float(stats.ks_2samp(measured, simulated).statistic)
        rows.append(
            Row(
                rid,
                f"{label} distribution distance (two-sample Kolmogorov-Smirnov)",
                0.0,
                distance,
                "KS D",
                f"sup |F_measured - F_simulated| over {len(measured)} requests; 0 is the "
                f"measured distribution itself (no error %); {note}",
                runtime=RUNTIME,
            )
        )
    blocks = trace.settings.get("num_gpu_blocks")
    if blocks:
        block_size = int(trace.settings.get("block_size") or VLLM_BLOCK_SIZE)
        total = results.iterations["kv_blocks_total"]
        rows.append(
            Row(
                rid,
                "KV cache capacity",
                float(blocks * block_size),
                float(total.max() * block_size) if len(total) else None,
                "tokens",
                f"measured: meta.json num_gpu_blocks {blocks} x block_size {block_size}; "
                "simulated: the memory plan's KV blocks at the same gpu_memory_utilization; "
                + note,
                runtime=RUNTIME,
            )
        )
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))
