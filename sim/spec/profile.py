"""Calibration profiles: measured op times of one device, and curves fitted to them.

A profile is YAML in hardware/calibration/ (or anywhere, by path). It holds:

- `measurements`: raw timings from `llmsim calibrate` (median and spread per shape).
  The calibrated kernel interpolates them where an asked shape lies inside the grid.
- `fit`: per op family, a few coefficients of a shape-based curve (see
  sim.calibrate.fit), used everywhere else. Profiles derived from public data ship
  only the fit: they predict a model that was never profiled from its shapes.
- `runtime`: what the software around the kernels costs on this machine: the host time
  of one step of a small eager (and compiled) decoder, the eager dispatch of one kernel
  and, on CUDA, the replay of a CUDA graph (see sim.calibrate.runtime).

A point with `form: hf` (or a GEMM with `form: conv1d`) was timed the way Hugging Face
transformers' eager modules call that op (the `hf-eager` runtime), not as one kernel;
the kernel-form fits never mix them in.

Every time is seconds for one kernel on one device; every size is elements or bytes as
named. A device names its profile with `calibration: NAME` in its catalog entry, or a
profile names its device with `device:`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.spec.base import Spec
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec


class Timing(Spec):
    median_s: float = Field(gt=0)
    p10_s: float | None = None
    p90_s: float | None = None


class GemmPoint(Timing):
    m: int = Field(gt=0, description="rows: tokens")
    n: int = Field(gt=0, description="output columns")
    k: int = Field(gt=0, description="reduction dimension")
    form: Literal["conv1d"] | None = Field(
        default=None,
        description="None: nn.Linear (x @ W[n,k].T); conv1d: transformers' Conv1D "
        "(addmm(bias, x, W[k,n]), GPT-2)",
    )


class AttentionPoint(Timing):
    phase: Literal["prefill", "decode"]
    batch: int = Field(gt=0)
    q_len: int = Field(gt=0, description="query tokens per sequence (1 for decode)")
    kv_len: int = Field(ge=0, description="keys per sequence, including the queries")
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    form: Literal["hf"] | None = Field(
        default=None,
        description="None: one SDPA / FlashAttention call, grouped heads folded; hf: as "
        "transformers' sdpa_attention_forward calls SDPA, its output made contiguous",
    )


class ElementwisePoint(Timing):
    op: Literal["norm", "act", "rotary", "add", "embedding", "kv_cat"]
    tokens: int = Field(gt=0, description="tokens (kv_cat: KV tokens after the append)")
    width: int = Field(gt=0, description="elements per token read")
    form: Literal["hf"] | None = Field(
        default=None, description="None: the op's fused kernel; hf: transformers' module"
    )
    kernel: str | None = Field(
        default=None, description="what ran (hf form): rmsnorm, layernorm, gelu_new, ..."
    )


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


class FormTimes(Spec):
    """One figure for an eager and a compiled (torch.compile) run of the same code."""

    eager: float | None = Field(default=None, gt=0)
    compiled: float | None = Field(default=None, gt=0)


class HostProbe(Spec):
    """One decode step of a framework's own small model (`model`, at one layer): what
    the step costs outside its layers and what each layer adds."""

    model: ModelSpec
    framework: str = ""
    batch: int = Field(default=1, gt=0)
    context: int = Field(gt=0, description="cached tokens the step attends to")
    step_s: float = Field(ge=0, description="the step less its layers")
    layer_s: float = Field(gt=0, description="each layer")


class RuntimeMeasurements(Spec):
    """The software's share of a step on this machine (sim.calibrate.runtime)."""

    decoder: str = Field(default="", description="the small decoder the host times are of")
    host_step_s: FormTimes = Field(
        default_factory=FormTimes,
        description="one decode step of the small decoder: host work, its kernels do none",
    )
    host_layer_s: FormTimes = Field(
        default_factory=FormTimes, description="of which each layer (the rest: per step)"
    )
    kernels_per_layer: int | None = Field(default=None, ge=0, description="eager")
    kernel_launch_s: float | None = Field(
        default=None, gt=0, description="eager dispatch and launch of one tiny kernel"
    )
    graph_launch_s: float | None = Field(
        default=None, gt=0, description="replay of a captured CUDA graph of one tiny kernel"
    )
    graph_kernel_s: float | None = Field(
        default=None, gt=0, description="each further tiny kernel inside a replayed graph"
    )
    hf: dict[str, HostProbe] = Field(
        default_factory=dict,
        description="with --hf: a small transformers model of each family measured "
        "(gpt2, llama), its decode step's host time",
    )
    notes: tuple[str, ...] = ()


class Environment(Spec):
    device_name: str = ""
    driver: str = ""
    cuda: str = ""
    torch: str = ""
    python: str = ""
    transformers: str = ""
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
    heads: int | None = Field(default=None, description="the shape fitted (None: every shape)")
    kv_heads: int | None = None
    head_dim: int | None = None
    form: Literal["hf"] | None = None


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
    attention_shapes: tuple[AttentionFit, ...] = Field(
        default=(), description="one fit per measured (heads, kv_heads, head_dim, form)"
    )
    hf: dict[str, StreamFit] = Field(
        default_factory=dict,
        description="element-wise ops as transformers runs them, by kernel (rmsnorm, "
        "gelu_new, rotary, kv_cat: a DynamicCache append of K and V, ...)",
    )
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
    runtime: RuntimeMeasurements | None = None
    fit: Fit = Fit()
    quality: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="fit errors per family (median/p90 absolute % error), for the record",
    )
