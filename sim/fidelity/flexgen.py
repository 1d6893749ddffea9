"""FlexGen on its T4 machine (`flexgen_*`): OPT-30B and OPT-175B offloaded from one T4
16 GB to 208 GB of DRAM and a 1.5 TB NVMe disk (cluster t4-flexgen), prompts of 512
tokens, 32 generated, one block of requests at once under FlexGen's own policy (its
placement, GPU batch size and count, CPU attention on or off), as its benchmark ran it.

The figures are the ones the shipped FlexGen scenarios quote (scenarios/opt-*-t4-flexgen*.
yaml): generation throughput from FlexGen's README / benchmark/batch_size_table.md, the
policies from its benchmark/flexgen/bench_suite.py, and its authors' prefill / decode
breakdown of the compressed OPT-175B run. They ship here, beside the handler, because the
measurements file (derived from the developers' measurements) has no FlexGen entry; each
carries its source. `validate()` adds them to the shipped measurements.

Modelled: a static padded block of `gpu_batch_size × gpu_batches` requests arriving at
once; throughput = generated tokens / makespan; prefill = the block's time to first token,
decode = the rest. Where FlexGen's placement needs more GPU memory than llmsim's memory
model grants (14.4 GB usable of the T4's 16), the GPU's share of the weights moves to DRAM
until it fits, and the note says so. The PCIe figure the offload model prices copies at
(NVIDIA's bandwidthTest on a T4) is listed too; comparing with it would be circular.
"""

from __future__ import annotations

from typing import Any

from sim.arith.precision import Precision
from sim.cost.offload import PINNED_COPY_BYTES_PER_S, tier_bytes
from sim.cost.topology import build_cluster
from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    Options,
    Row,
    fixed_workload,
    need,
    number,
    simulate_summary,
)
from sim.plan import load_scenario
from sim.plan.offload import offload_machine
from sim.spec import catalog
from sim.spec.offload import OffloadSpec

CLUSTER = "t4-flexgen"
GROUP = "F_flexgen_offloading"

_README = (
    "https://github.com/FMInference/FlexLLMGen (README 'Generation Throughput (token/s)' "
    "table; benchmark/batch_size_table.md: T4 16 GB on GCP, 208 GB DRAM, 1.5 TB SSD, input "
    "512, output 32)"
)
_SUITE = "benchmark/flexgen/bench_suite.py"
_QUOTED = "as quoted by the shipped scenario"

ENTRIES: list[dict[str, Any]] = [
    {
        "id": "flexgen_opt175b_t4_fp16_512",
        "group": GROUP,
        "model": "opt-175b",
        "hardware": "nvidia_t4 (GCP, 208 GB DRAM, 1.5 TB NVMe)",
        "precision": {"weights": "fp16", "activations": "fp16", "kv": "fp16"},
        "framework": "FlexGen",
        "workload": {"prompt_tokens": 512, "output_tokens": 32},
        "policy": {
            "weights": [0, 0.5, 0.5],
            "kv": [0, 0, 1],
            "activations": [0, 1, 0],
            "gpu_batch_size": 32,
            "gpu_batches": 8,
            "cpu_attention": True,
        },
        "metric": "generation throughput",
        "value": 0.69,
        "unit": "tokens/s",
        "source": {
            "url": _README,
            "quote": "FlexGen | ... | 0.69 (OPT-175B); effective batch 256 (disk); policy "
            f"{_SUITE} suite_175b_1x1: --percent 0 50 0 0 0 100 --gpu-batch-size 32 "
            f"--num-gpu-batches 8 --cpu ({_QUOTED} opt-175b-t4-flexgen.yaml)",
        },
    },
    {
        "id": "flexgen_opt30b_t4_fp16_512",
        "group": GROUP,
        "model": "opt-30b",
        "hardware": "nvidia_t4 (GCP, 208 GB DRAM, 1.5 TB NVMe)",
        "precision": {"weights": "fp16", "activations": "fp16", "kv": "fp16"},
        "framework": "FlexGen",
        "workload": {"prompt_tokens": 512, "output_tokens": 32},
        "policy": {
            "weights": [0.2, 0.8, 0],
            "kv": [0, 1, 0],
            "activations": [0, 1, 0],
            "gpu_batch_size": 48,
            "gpu_batches": 3,
            "cpu_attention": True,
        },
        "metric": "generation throughput",
        "value": 7.32,
        "unit": "tokens/s",
        "source": {
            "url": _README,
            "quote": "FlexGen | ... | 7.32 (OPT-30B); effective batch 144 (cpu); policy "
            f"{_SUITE} suite_30b_1x1: --percent 20 80 0 100 0 100 --gpu-batch-size 48 "
            f"--num-gpu-batches 3 --cpu ({_QUOTED} opt-30b-t4-flexgen.yaml)",
        },
    },
    {
        "id": "flexgen_opt175b_t4_int4_512",
        "group": GROUP,
        "model": "opt-175b",
        "hardware": "nvidia_t4 (GCP, 208 GB DRAM, 1.5 TB NVMe)",
        "precision": {"weights": "int4", "activations": "fp16", "kv": "int4", "group_size": 64},
        "framework": "FlexGen with compression (4-bit group-wise weights and KV)",
        "workload": {"prompt_tokens": 512, "output_tokens": 32},
        "policy": {
            "weights": [0, 1, 0],
            "kv": [0, 1, 0],
            "activations": [0, 1, 0],
            "gpu_batch_size": 48,
            "gpu_batches": 3,
            "cpu_attention": False,
        },
        "metric": "generation throughput",
        "value": 1.12,
        "unit": "tokens/s",
        "source": {
            "url": _README,
            "quote": "FlexGen with Compression | ... | 1.12 (OPT-175B); effective batch 144 "
            f"(cpu); policy {_SUITE} suite_175b_1x1_comp: --percent 0 100 0 100 0 100 "
            "--gpu-batch-size 48 --num-gpu-batches 3 --compress-weight --compress-cache "
            f"({_QUOTED} opt-175b-t4-flexgen-int4.yaml)",
        },
    },
    {
        "id": "flexgen_opt175b_t4_int4_512_breakdown",
        "group": GROUP,
        "model": "opt-175b",
        "hardware": "nvidia_t4 (GCP, 208 GB DRAM, 1.5 TB NVMe)",
        "precision": {"weights": "int4", "activations": "fp16", "kv": "int4", "group_size": 64},
        "framework": "FlexGen with compression (4-bit group-wise weights and KV)",
        "workload": {"prompt_tokens": 512, "output_tokens": 32},
        "policy": {
            "weights": [0, 1, 0],
            "kv": [0, 1, 0],
            "activations": [0, 1, 0],
            "gpu_batch_size": 48,
            "gpu_batches": 3,
            "cpu_attention": False,
        },
        "metric": "prefill and decode latency of the block",
        "value": {"prefill_s": 1469, "decode_s": 2603},
        "unit": "s",
        "source": {
            "url": "https://github.com/FMInference/FlexLLMGen/issues/24",
            "quote": "its authors' breakdown of the suite_175b_1x1_comp run: prefill 1469 s, "
            f"decode 2603 s ({_QUOTED} opt-175b-t4-flexgen-int4.yaml)",
        },
    },
    {
        "id": "flexgen_t4_pcie_pinned_copies",
        "group": GROUP,
        "hardware": "nvidia_t4 (Google Colab, a GCP host; PCIe Gen3 x16)",
        "framework": "CUDA samples bandwidthTest --mode=shmoo, pinned memory",
        "metric": "pinned copy bandwidth, 32-68 MB transfers",
        "value": {
            "h2d": PINNED_COPY_BYTES_PER_S["h2d"] / 1e9,
            "d2h": PINNED_COPY_BYTES_PER_S["d2h"] / 1e9,
        },
        "unit": "GB/s",
        "source": {
            "url": "a public GitHub README of a CUDA course assignment ('Assignment I: GPU "
            "programming enviroment', read_file id 32437540185)",
            "quote": "Device 0: Tesla T4 ... Host to Device Bandwidth ... PINNED Memory "
            "Transfers ... 68000000 12.3 ... Device to Host Bandwidth ... 68000000 13.2",
        },
    },
]


def missing_entries(entries: list[Any]) -> list[dict[str, Any]]:
    """The FlexGen entries a measurements list does not already hold (by id)."""
    have = {e.get("id") for e in entries if isinstance(e, dict)}
    return [e for e in ENTRIES if e["id"] not in have]


def _fit_gpu(data: dict[str, Any], spec: OffloadSpec) -> tuple[OffloadSpec, str]:
    """FlexGen's placement, or with the GPU's share of the weights moved to DRAM until
    llmsim's GPU tier holds it (and why)."""
    s = load_scenario({**data, "offload": spec.model_dump()})
    precision = Precision.of(s.precision)
    workload = data["workload"]
    prompt, output = workload["prompt"]["value"], workload["output"]["value"]
    gpu = tier_bytes(s.model, precision, spec, prompt, output)["gpu"]
    cluster = build_cluster(s.cluster)
    have = cluster.device.memory_bytes * s.scheduler.policy_params().gpu_memory_utilization
    needed = gpu.at(spec.values())
    per_share = gpu.coef.get("weights.gpu", 0.0) - gpu.coef.get("weights.cpu", 0.0)
    if needed <= have or per_share <= 0:
        return spec, ""
    w = spec.weights
    moved = min(w[0], (needed - have) / per_share)
    g = max(0.0, round(w[0] - moved - 5e-5, 4))
    fitted = spec.model_copy(update={"weights": (g, round(w[1] + w[0] - g, 4), w[2])})
    note = (
        f"; FlexGen's placement needs {needed / 1e9:.1f} GB of GPU in llmsim's memory model "
        f"({have / 1e9:.1f} GB usable): weights run {g:.2%} on the GPU instead of {w[0]:.0%}"
    )
    return fitted, note


def _setup(entry: dict[str, Any], opts: Options) -> tuple[dict[str, Any], str]:
    """The scenario of an entry (FlexGen's policy on t4-flexgen) and a note on it."""
    policy = need(entry, "policy")
    spec = OffloadSpec.model_validate(policy)
    prompt = int(number(need(entry, "workload.prompt_tokens"), "workload.prompt_tokens"))
    output = int(number(need(entry, "workload.output_tokens"), "workload.output_tokens"))
    block = spec.block
    data: dict[str, Any] = {
        "name": entry["id"],
        "cluster": CLUSTER,
        "model": str(need(entry, "model")),
        "precision": dict(need(entry, "precision")),
        "scheduler": {"policy": "static", "batch_size": block, "padding": "padded", "max_wait": 0},
        "workload": fixed_workload(block, prompt, output),
    }
    spec, fitted = _fit_gpu(data, spec)
    data["offload"] = spec.model_dump()
    w, kv, act = (
        "/".join(f"{x:g}" for x in (100 * v for v in t))
        for t in (spec.weights, spec.kv, spec.activations)
    )
    note = (
        f"{data['model']} on {CLUSTER}: FlexGen's policy, weights {w} %, KV {kv} %, "
        f"activations {act} % (gpu/cpu/disk), {spec.gpu_batches} GPU batches of "
        f"{spec.gpu_batch_size}, CPU attention {'on' if spec.cpu_attention else 'off'}; "
        f"one static block of {block} requests, {prompt} in / {output} out" + fitted
    )
    return data, note


def flexgen(entry: dict[str, Any], opts: Options) -> list[Row]:
    if entry["id"] == "flexgen_t4_pcie_pinned_copies":
        return _pcie(entry)
    data, note = _setup(entry, opts)
    summary = simulate_summary(data)
    value = need(entry, "value")
    if not isinstance(value, dict):
        return [
            Row(
                entry["id"],
                "generation tok/s",
                number(value),
                summary.output_tokens_per_s,
                str(entry.get("unit", "tokens/s")),
                note + "; generated tokens / makespan",
            )
        ]
    prefill = summary.ttft_s.p50
    decode = summary.sim_time_s - prefill if prefill is not None else None
    simulated = {"prefill_s": prefill, "decode_s": decode}
    return [
        Row(
            f"{entry['id']}/{key}",
            f"{key.removesuffix('_s')} latency of the block",
            number(value[key], f"value.{key}"),
            simulated[key],
            "s",
            note + ("; time to first token" if key == "prefill_s" else "; makespan − prefill"),
        )
        for key in ("prefill_s", "decode_s")
        if key in value
    ]


def _pcie(entry: dict[str, Any]) -> list[Row]:
    machine = offload_machine(build_cluster(catalog.load_cluster(CLUSTER)))
    priced = {"h2d": machine.h2d_bytes_per_s, "d2h": machine.d2h_bytes_per_s}
    value = need(entry, "value")
    return [
        Row(
            f"{entry['id']}/{way}",
            f"pinned copy {way}",
            number(value[way], f"value.{way}"),
            None,
            "GB/s",
            f"the offload model's pinned-copy rates are this figure as a share of PCIe's "
            f"nominal rate (t4-flexgen prices {way} at {priced[way] / 1e9:.1f} GB/s of "
            f"{machine.pcie_bytes_per_s / 1e9:.0f}): comparing them would be circular",
            NOT_REPRODUCIBLE,
        )
        for way in ("h2d", "d2h")
    ]
