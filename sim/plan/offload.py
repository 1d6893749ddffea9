"""What an offloaded replica works with and whether its placement fits: the host's
PCIe, disk, DRAM and CPU, and each memory tier's peak bytes under the placement.

PCIe is taken at its achieved pinned-copy rate (the GPU's calibration profile's measured
copies, else a measured share of the link's nominal rate) and the host CPU at its achieved
memory bandwidth (its calibration profile's measured copies, else its datasheet
bandwidth × `efficiency.memory`): see sim.cost.offload."""

from __future__ import annotations

from sim.arith.precision import Precision
from sim.cost.offload import (
    Machine,
    host_stream_bytes_per_s,
    pinned_copy_bytes_per_s,
    tier_bytes,
)
from sim.cost.topology import Cluster
from sim.errors import LlmsimError
from sim.spec import catalog
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.offload import OffloadSpec
from sim.spec.profile import Fit
from sim.spec.scenario import Scenario
from sim.workload.arrivals import generate


def offload_machine(cluster: Cluster) -> Machine:
    """The PCIe, disk, host DRAM and host CPU an offloaded GPU works with."""
    node = cluster.node_spec
    if node is None or node.host.disk is None:
        raise LlmsimError(
            f"cluster {cluster.spec.name} has no host disk; offloading needs a node with "
            "`host.disk` (e.g. t4-flexgen)",
            key="offload",
        )
    disk = node.host.disk
    cpu = catalog.load_device(node.host.cpu or "host-cpu")
    gpu_fit = _fit(cluster.device)
    cpu_fit = _fit(cpu)
    nominal = node.pcie.bandwidth_bytes_per_s
    return Machine(
        gpu=cluster.device,
        cpu=cpu,
        h2d_bytes_per_s=pinned_copy_bytes_per_s(
            nominal, gpu_fit.copy_h2d_bytes_per_s if gpu_fit else None, "h2d"
        ),
        d2h_bytes_per_s=pinned_copy_bytes_per_s(
            nominal, gpu_fit.copy_d2h_bytes_per_s if gpu_fit else None, "d2h"
        ),
        disk_read_bytes_per_s=disk.read_bandwidth_bytes_per_s,
        disk_write_bytes_per_s=disk.write_bandwidth_bytes_per_s,
        cpu_bytes=node.host.dram_bytes,
        disk_bytes=disk.capacity_bytes,
        pcie_bytes_per_s=nominal,
        cpu_stream_bytes_per_s=host_stream_bytes_per_s(
            cpu, cpu_fit.copy_h2d_bytes_per_s if cpu_fit else None
        ),
    )


def _fit(device: DeviceSpec) -> Fit | None:
    """The fitted figures of the device's calibration profile, if it has one (on a CPU
    the profile's "h2d" copies are memcpys between host buffers)."""
    profile = catalog.profile_for(device)
    return profile.fit if profile is not None else None


def offload_capacity(s: Scenario, cluster: Cluster, precision: Precision) -> float:
    """The GPU bytes an offload placement holds at peak, after checking every tier."""
    assert s.offload is not None
    arrivals = generate(s.workload, s.seed, s.base_dir)
    prompt = int(arrivals.prompt_tokens.max()) if len(arrivals) else 1
    output = int(arrivals.output_tokens.max()) if len(arrivals) else 1
    params = s.scheduler.policy_params()
    try:
        need = check_capacity(
            s.model,
            precision,
            s.offload,
            offload_machine(cluster),
            prompt,
            output,
            cluster.device.memory_bytes * params.gpu_memory_utilization,
        )
    except LlmsimError as exc:
        raise s.error(exc.message, exc.key or "offload") from None
    return need["gpu"]


def check_capacity(
    model: ModelSpec,
    precision: Precision,
    spec: OffloadSpec,
    machine: Machine,
    prompt: int,
    output: int,
    gpu_bytes: float,
) -> dict[str, float]:
    """Each tier's peak bytes under the placement, or an error naming the tier short."""
    need = {
        tier: lin.at(spec.values())
        for tier, lin in tier_bytes(model, precision, spec, prompt, output).items()
    }
    have = {"gpu": gpu_bytes, "cpu": machine.cpu_bytes, "disk": machine.disk_bytes}
    for tier in ("gpu", "cpu", "disk"):
        if need[tier] > have[tier] + 1:
            raise LlmsimError(
                f"the {tier} tier is short: the placement needs {need[tier] / 1e9:.1f} GB "
                f"(weights, KV of {spec.block} sequences of {prompt}+{output} tokens, "
                f"activations) but has {have[tier] / 1e9:.1f} GB",
                key="offload",
            )
    return need
