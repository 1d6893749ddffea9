"""The runtimes' kernels against their published microbenchmarks (group
R_runtime_kernels, `sim/fidelity/runtime_figures.yaml`): the custom all-reduce that
vllm-v0/v1, sglang and tensorrt-llm use inside an NVLink domain, priced by the same
`CollectiveModel` the engine uses, on a DGX H100 at TP 2/4/8. The source timed the
kernels without CUDA graphs, one launch included; the runtimes take their
`custom_latency` from its 512-byte rows as they stand, launch and all, and these rows
are priced so; inside a CUDA graph the engine takes the device's launch overhead off
(sim.plan.deploy.custom_latency_s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.cost.collectives import CollectiveModel, CustomAllReduce
from sim.cost.topology import build_cluster
from sim.fidelity.rows import EntryError, Options, Row, need, number
from sim.spec import yamlio
from sim.spec.catalog import load_cluster, load_runtime

KERNEL_RUNTIME = {"vllm": "vllm-v1", "trt": "sglang"}  # whose custom_latency each sets
TPS = (2, 4, 8)


def custom_all_reduce(entry: dict[str, Any], opts: Options) -> list[Row]:
    cluster = build_cluster(load_cluster("dgx-h100"))
    rows: list[Row] = []
    for kernel, series in need(entry, "value").items():
        name = KERNEL_RUNTIME.get(str(kernel))
        if name is None:
            raise EntryError(f"unknown kernel {kernel!r}")
        rt = load_runtime(name)
        custom = CustomAllReduce(rt.custom_max_bytes, rt.custom_latency_s, rt.custom_bandwidth)
        for size, per_tp in series.items():
            if not isinstance(per_tp, list) or len(per_tp) != len(TPS):
                raise EntryError(f"value.{kernel}.{size}: expected one figure per TP {TPS}")
            for tp, ms in zip(TPS, per_tp, strict=True):
                model = CollectiveModel(cluster, tuple(range(tp)), (), custom)
                simulated = model.all_reduce_s(float(size)) * 1e3
                note = (
                    f"{name}'s custom all-reduce (latency {rt.custom_latency_s * 1e6:g} us, "
                    f"{(rt.custom_bandwidth or 0) / 1e9:g} GB/s) on dgx-h100, TP{tp}, {size} B"
                    + ("; in sample (sets the latency)" if int(size) == 512 else "")
                    + ("; in sample (sets the bandwidth)" if int(size) == 1048576 else "")
                )
                rows.append(
                    Row(
                        f"{entry['id']}/{kernel}/tp{tp}/{size}",
                        f"all-reduce latency ({kernel}, TP{tp}, {size} B)",
                        number(ms),
                        simulated,
                        "ms",
                        note,
                        runtime=name,
                    )
                )
    return rows


FIGURES = Path(__file__).resolve().parent / "runtime_figures.yaml"


def missing_entries(entries: list[Any]) -> list[Any]:
    """The runtime figures (runtime_figures.yaml) not already among `entries`."""
    have = {e.get("id") for e in entries if isinstance(e, dict)}
    extra = yamlio.read_yaml(FIGURES).get("measurements", [])
    return [e for e in extra if isinstance(e, dict) and e.get("id") not in have]
