"""Hardware as data: devices, links, nodes and clusters.

A device is anything that computes and holds memory: GPUs, TPUs and host CPUs alike.
A link is a directed pipe with a bandwidth per direction and a latency; NVLink,
NVSwitch ports, PCIe, InfiniBand/Ethernet NICs, TPU ICI, host DRAM and NVMe are all
links. A node is devices plus the fabric inside it; a cluster is nodes plus the
network between them, or a torus of chips. Peak FLOP/s are dense (no sparsity).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, model_validator

from sim.errors import LlmsimError
from sim.spec.base import Bytes, BytesPerS, FlopsPerS, Seconds, Spec
from sim.units import COMPUTE_FALLBACK, STRICT_COMPUTE


class EfficiencySpec(Spec):
    """Derating of the roofline for the v1 cost kernel (fraction of peak reached by
    well-shaped kernels). Never above 1, so no op is priced faster than the roofline."""

    compute: float = Field(0.7, gt=0, le=1)
    memory: float = Field(0.8, gt=0, le=1)


def _watts(value: object) -> object:
    """`700 W`, `1.2 kW`, `90` -> watts."""
    if not isinstance(value, str):
        return value
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(k?W)", value.strip())
    if not m:
        raise ValueError(f"expected a power such as '700 W' or '1.2 kW', got {value!r}")
    return float(m.group(1)) * (1e3 if m.group(2) == "kW" else 1.0)


Watts = Annotated[float, BeforeValidator(_watts)]


class PowerSpec(Spec):
    """Board power: `idle` with the model loaded and nothing running (a serving engine
    keeps its CUDA context, so the idle P-state), `peak` the board's TDP/TGP, what it
    draws running flat out. sim.results.energy turns them into a run's energy."""

    idle_watts: Watts = Field(alias="idle", ge=0)
    peak_watts: Watts = Field(alias="peak", gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PowerSpec:
        if self.idle_watts > self.peak_watts:
            raise ValueError(
                f"idle power {self.idle_watts:g} W is above peak {self.peak_watts:g} W"
            )
        return self


class DeviceSpec(Spec):
    name: str
    aliases: tuple[str, ...] = ()
    kind: Literal["gpu", "tpu", "cpu"]
    vendor: str = ""
    description: str = ""
    peak_flops: dict[str, FlopsPerS] = Field(
        description="dense peak FLOP/s by dtype (fp32, tf32, bf16, fp16, fp8, int8, int4)"
    )
    memory_bytes: Bytes = Field(gt=0)
    memory_bandwidth_bytes_per_s: BytesPerS = Field(alias="memory_bandwidth", gt=0)
    sm_count: int | None = None
    launch_overhead_s: Seconds = Field(alias="launch_overhead", default=4e-6, ge=0)
    efficiency: EfficiencySpec = EfficiencySpec()
    # Per-direction bandwidth of the device's own ports, for nodes that do not say.
    nvlink_bandwidth_bytes_per_s: BytesPerS | None = Field(alias="nvlink_bandwidth", default=None)
    interconnect_bandwidth_bytes_per_s: BytesPerS | None = Field(
        alias="interconnect_bandwidth", default=None
    )
    pcie_bandwidth_bytes_per_s: BytesPerS | None = Field(alias="pcie_bandwidth", default=None)
    price_per_hour_usd: float | None = Field(alias="price_per_hour", default=None, ge=0)
    power: PowerSpec | None = Field(
        default=None, description="idle and peak board power; energy is not reported without it"
    )
    sources: dict[str, str] = Field(default_factory=dict)
    calibration: str | None = Field(
        default=None, description="name of a profile in hardware/calibration/"
    )

    @model_validator(mode="after")
    def _check(self) -> DeviceSpec:
        unknown = set(self.peak_flops) - set(COMPUTE_FALLBACK)
        if unknown:
            raise ValueError(
                f"peak_flops has unknown dtype(s) {sorted(unknown)}; "
                f"valid: {', '.join(COMPUTE_FALLBACK)}"
            )
        if not self.peak_flops:
            raise ValueError("peak_flops needs at least one dtype")
        return self

    def flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for a matmul whose operands are `dtype`, falling back to the
        nearest dtype the device runs (fp8 on an A100 runs as fp16)."""
        for candidate in COMPUTE_FALLBACK.get(dtype, (dtype,)):
            if candidate in self.peak_flops:
                return self.peak_flops[candidate]
        if dtype in STRICT_COMPUTE:
            raise LlmsimError(
                f"{dtype} matmuls need a device with {dtype} tensor cores; {self.name} has "
                f"{', '.join(self.peak_flops)} (use {dtype} for weights only, with bf16 "
                "activations)",
                key="precision.activations",
            )
        return max(self.peak_flops.values())

    def ridge_flops_per_byte(self, dtype: str = "bf16") -> float:
        """Peak FLOP/s ÷ memory bandwidth: the arithmetic intensity where an op turns
        from memory- to compute-bound."""
        return self.flops(dtype) / self.memory_bandwidth_bytes_per_s


class LinkSpec(Spec):
    """A directed pipe. `bandwidth` is per direction."""

    bandwidth_bytes_per_s: BytesPerS = Field(alias="bandwidth", ge=0)
    latency_s: Seconds = Field(alias="latency", default=0.0, ge=0)
    kind: str = ""


class DiskSpec(Spec):
    capacity_bytes: Bytes = Field(alias="capacity", gt=0)
    read_bandwidth_bytes_per_s: BytesPerS = Field(alias="read_bandwidth", gt=0)
    write_bandwidth_bytes_per_s: BytesPerS = Field(alias="write_bandwidth", gt=0)
    latency_s: Seconds = Field(alias="latency", default=100e-6, ge=0)


class HostSpec(Spec):
    """The host side of a node: its CPU (a device in the catalog), DRAM and disk."""

    cpu: str | None = Field(default=None, description="a cpu device name, for host compute")
    dram_bytes: Bytes = Field(alias="dram", gt=0)
    disk: DiskSpec | None = None


FabricKind = Literal["nvswitch", "nvlink-pairs", "nvlink-mesh", "pcie", "none"]


class FabricSpec(Spec):
    """How the devices inside a node talk.

    - `nvswitch`: every device has one port of `bandwidth` into a non-blocking switch.
    - `nvlink-pairs`: devices (0,1), (2,3), ... share a direct NVLink; other pairs go
      over PCIe through the host.
    - `nvlink-mesh`: a direct link of `bandwidth` between every pair.
    - `pcie`: everything crosses the PCIe switch / host.
    """

    kind: FabricKind
    bandwidth_bytes_per_s: BytesPerS = Field(alias="bandwidth", default=0.0, ge=0)
    latency_s: Seconds = Field(alias="latency", default=2e-6, ge=0)


class NodeSpec(Spec):
    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    device: str | DeviceSpec
    devices_per_node: int = Field(gt=0)
    fabric: FabricSpec
    pcie: LinkSpec = Field(description="per device, host <-> device, per direction")
    host: HostSpec
    nic: LinkSpec | None = Field(default=None, description="per device NIC (rail) to the network")
    sources: dict[str, str] = Field(default_factory=dict)


class TorusSpec(Spec):
    """A TPU-style slice: chips on a 2D/3D torus, `link` per neighbour per direction."""

    device: str | DeviceSpec
    dims: tuple[int, ...] = Field(min_length=1, max_length=3)
    link: LinkSpec
    wraparound: bool = True
    chips_per_host: int = 4
    host: HostSpec
    pcie: LinkSpec


class NetworkSpec(Spec):
    """Between nodes. `fat-tree`/`rail`: each device's NIC reaches every other node at
    full NIC bandwidth (non-blocking); latency is the switch hop latency."""

    kind: Literal["fat-tree", "rail"] = "fat-tree"
    latency_s: Seconds = Field(alias="latency", default=5e-6, ge=0)


class ClusterSpec(Spec):
    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    node: str | NodeSpec | None = None
    nodes: int = Field(default=1, gt=0)
    network: NetworkSpec = NetworkSpec()
    torus: TorusSpec | None = None
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_form(self) -> ClusterSpec:
        if (self.node is None) == (self.torus is None):
            raise ValueError("a cluster names either `node` (with `nodes`) or `torus`")
        return self
