"""vLLM Table 1 (`vllm_table1_memory`, `vllm_opt13b_kv_per_token`): weight bytes, KV
space and KV slots from the engine's own memory plan (`plan_memory`) at vLLM's default
gpu_memory_utilization of 0.9, and the closed-form KV bytes per token."""

from __future__ import annotations

import re
from typing import Any

from sim.arith.memory import kv_bytes_per_token
from sim.arith.params import total_params
from sim.arith.precision import Precision
from sim.cost.topology import build_cluster
from sim.fidelity.rows import (
    EntryError,
    Options,
    Row,
    cluster_of,
    dtype_in,
    fixed_workload,
    model_name,
    need,
    number,
)
from sim.plan import load_scenario
from sim.plan.memory import plan_memory
from sim.spec import catalog

VLLM_MEMORY_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization (paper era)


def _a100_part(gpus: str, total_gb: float, count: int) -> str:
    """Which A100: named in the GPU string, else by the memory per GPU."""
    if "80GB" in gpus.replace(" ", ""):
        return "a100-80gb-sxm"
    if "40GB" in gpus.replace(" ", ""):
        return "a100-40gb"
    per = round(total_gb / count)
    parts = {40: "a100-40gb", 80: "a100-80gb-sxm"}
    if "A100" not in gpus or per not in parts:
        raise EntryError(f"cannot tell the GPU from {gpus!r} with {total_gb} GB over {count}")
    return parts[per]


def vllm_memory(entry: dict[str, Any], opts: Options) -> list[Row]:

    value = need(entry, "value")
    counts = entry.get("count") or {}
    if not isinstance(value, dict):
        raise EntryError("value is not a mapping of model sizes")
    models = [m.strip() for m in str(need(entry, "model")).split("/")]
    dtype = dtype_in(str(entry.get("precision") or "fp16"))
    rows = []
    for size, info in value.items():
        rid = f"{entry['id']}/{size}"
        name = next((m for m in models if m.upper().endswith(str(size).upper())), None)
        if name is None or not isinstance(info, dict):
            raise EntryError(f"no model for size {size}")
        gpus = str(info.get("gpus", ""))
        count_raw = counts.get(size) if isinstance(counts, dict) else None
        if count_raw is None:
            many = re.match(r"\s*(\d+)\s*x", gpus)
            count_raw = many.group(1) if many else 1
        count = int(number(count_raw, f"count.{size}"))
        if count < 1:
            raise EntryError(f"count.{size} must be at least 1, got {count}")
        device = _a100_part(gpus, number(info.get("total_mem_GB", 0), "total_mem_GB"), count)
        s = load_scenario(
            {
                "name": rid,
                "cluster": cluster_of(device),
                "model": catalog.load_model(name).name,
                "precision": {"weights": dtype, "activations": dtype, "kv": dtype},
                "parallel": {"tp": count},
                "scheduler": {"policy": "vllm", "gpu_memory_utilization": VLLM_MEMORY_UTILIZATION},
                "workload": fixed_workload(1, 1, 1),
            }
        )
        cluster = build_cluster(s.cluster)
        precision = Precision.of(s.precision)
        plan = plan_memory(s, cluster, precision)
        usable = cluster.device.memory_bytes * VLLM_MEMORY_UTILIZATION
        kv_free = count * sum(usable - w - plan.workspace_bytes for w in plan.weight_bytes)
        block_size = s.scheduler.policy_params().block_size
        how = (
            f"{s.model.name} {dtype}, tp{count} on {count}x {device} ({gpus}); vLLM memory plan "
            f"at gpu_memory_utilization {VLLM_MEMORY_UTILIZATION}"
        )
        rows += [
            Row(
                f"{rid}/params",
                "weights",
                number(info.get("params_GB"), "params_GB"),
                total_params(s.model) * precision.w_bytes / 1e9,
                "GB",
                f"{how}; parameters x {precision.w_bytes:g} bytes, GB = 1e9 B",
            ),
            Row(
                f"{rid}/kv_cache",
                "KV cache space",
                number(info.get("kv_cache_GB"), "kv_cache_GB"),
                kv_free / 2**30,
                "GiB",
                f"{how}; usable - weights - activation workspace, summed over GPUs; in GiB, "
                "as the paper's slots imply (slots x KV/token = its GB x 2^30)",
            ),
            Row(
                f"{rid}/slots",
                "max KV slots",
                number(info.get("max_kv_slots"), "max_kv_slots"),
                float(plan.blocks * block_size),
                "tokens",
                f"{how}; KV blocks x block_size {block_size}",
            ),
        ]
    return rows


def kv_per_token(entry: dict[str, Any], opts: Options) -> list[Row]:

    model = catalog.load_model(model_name(entry))
    dtype = dtype_in(str(entry.get("precision") or need(entry, "metric")))
    return [
        Row(
            entry["id"],
            "KV bytes per token",
            number(need(entry, "value")),
            kv_bytes_per_token(model, dtype) / 1024,
            "KiB/token",
            f"{model.name} {dtype}: 2 x n_layers x n_kv_heads x d_head x bytes; KB = 1024 B "
            "(the source's 2 x 5120 x 40 x 2 = 819200 B)",
        )
    ]
