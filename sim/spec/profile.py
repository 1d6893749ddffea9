"""Calibration profiles: measured op times of one device, and curves fitted to them.

A profile is YAML in hardware/calibration/ (or anywhere, by path). It holds:

- `measurements`: raw timings from `llmsim calibrate` (median and spread per shape).
  The calibrated kernel interpolates them where an asked shape lies inside the grid.
- `fit`: per op family, a few coefficients of a shape-based curve (see
  sim.calibrate.fit), used everywhere else. Profiles derived from public data ship
  only the fit: they predict a model that was never profiled from its shapes.

Every time is seconds for one kernel on one device; every size is elements or bytes as
named. A device names its profile with `calibration: NAME` in its catalog entry, or a
profile names its device with `device:`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.spec.base import Spec
from sim.spec.hardware import DeviceSpec


class Timing(Spec):
    median_s: float = Field(gt=0)
    p10_s: float | None = None
    p90_s: float | None = None


class GemmPoint(Timing):
    m: int = Field(gt=0, description="rows: tokens")
    n: int = Field(gt=0, description="output columns")
    k: int = Field(gt=0, description="reduction dimension")


class AttentionPoint(Timing):
    phase: Literal["prefill", "decode"]
    batch: int = Field(gt=0)
    q_len: int = Field(gt=0, description="query tokens per sequence (1 for decode)")
    kv_len: int = Field(ge=0, description="keys per sequence, including the queries")
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)


class ElementwisePoint(Timing):
    op: Literal["norm", "act", "rotary", "add", "embedding"]
    tokens: int = Field(gt=0)
    width: int = Field(gt=0, description="elements per token read")


class CopyPoint(Timing):
    direction: Literal["h2d", "d2h"]
    bytes: int = Field(gt=0)


class CollectivePoint(Timing):
    op: Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]
    n_devices: int = Field(gt=1)
    bytes: int = Field(gt=0)
    fabric: str = ""


class Measurements(Spec):
    gemm: tuple[GemmPoint, ...] = ()
    attention: tuple[AttentionPoint, ...] = ()
    elementwise: tuple[ElementwisePoint, ...] = ()
    copies: tuple[CopyPoint, ...] = ()
    collectives: tuple[CollectivePoint, ...] = ()
    launch_s: float | None = Field(default=None, gt=0, description="an empty kernel")


class Environment(Spec):
    device_name: str = ""
    driver: str = ""
    cuda: str = ""
    torch: str = ""
    python: str = ""
    host: str = ""
    date: str = ""


class Curve(Spec):
    """A piecewise-linear function of log2(x), flat beyond its ends."""

    log2_x: tuple[float, ...]
    y: tuple[float, ...]


class Surface(Spec):
    """Values on a regular grid over (log2 m, log2 n, log2 k), read trilinearly and
    clamped to the grid's box: a smooth function of a GEMM's shape."""

    lo: tuple[float, float, float]
    step: float = Field(gt=0)
    shape: tuple[int, int, int]
    values: tuple[float, ...]


class GemmFit(Spec):
    """t = roofline(m, n, k) · exp(surface(log2 m, log2 n, log2 k)), never below the
    roofline: the surface is the log of how much slower than peak FLOP/s or bandwidth a
    GEMM of that shape runs (see sim.calibrate.fit)."""

    surface: Surface
    peak_flops: float = Field(gt=0, description="the FLOP/s the surface is relative to")
    bandwidth_bytes_per_s: float = Field(gt=0)


class StreamFit(Spec):
    """t = launch + bytes / (bandwidth·efficiency(bytes)): memory-bound kernels."""

    launch_s: float = Field(ge=0)
    efficiency: Curve


class AttentionFit(Spec):
    """Prefill: t = launch + FLOPs / (peak·compute(log2 FLOPs)).
    Decode: t = launch + KV bytes / (bandwidth·memory(log2 KV bytes)).
    Efficiencies are relative to the device's peak FLOP/s and bandwidth, so a fit can be
    carried to a device that was not measured (say so in `source`)."""

    prefill_launch_s: float = Field(ge=0)
    prefill_compute: Curve
    decode_launch_s: float = Field(ge=0)
    decode_memory: Curve
    source: str = ""


class CollectiveFit(Spec):
    """t = alpha_s + bytes / bandwidth for one (op, fabric, n_devices)."""

    op: str
    fabric: str
    n_devices: int
    alpha_s: float = Field(ge=0)
    bandwidth_bytes_per_s: float = Field(gt=0)


class Fit(Spec):
    gemm: GemmFit | None = None
    norm: StreamFit | None = None
    act: StreamFit | None = None
    rotary: StreamFit | None = None
    add: StreamFit | None = None
    embedding: StreamFit | None = None
    attention: AttentionFit | None = None
    collectives: tuple[CollectiveFit, ...] = ()
    copy_h2d_bytes_per_s: float | None = None
    copy_d2h_bytes_per_s: float | None = None


class Profile(Spec):
    name: str
    device: str = Field(description="the catalog device this profile calibrates")
    description: str = ""
    source: str = Field(description="where the numbers came from")
    dtype: str = "bf16"
    device_spec: DeviceSpec | None = Field(
        default=None,
        description="the measured device, when the catalog has none of that name (a CPU): "
        "a profile in hardware/calibration/ then makes the device usable by name",
    )
    environment: Environment = Environment()
    measurements: Measurements = Measurements()
    fit: Fit = Fit()
    quality: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="fit errors per family (median/p90 absolute % error), for the record",
    )
