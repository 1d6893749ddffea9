"""Dtypes of a deployment: weights, activations and the KV cache, and their bytes.

Matmuls run at the activation dtype (weight-only int8/int4/nvfp4/mxfp4 dequantise on
the fly, at a cost in scalar FLOPs). Group-wise int8/int4 values carry an fp16 scale
and zero per `group_size` values, counted in their bytes. Block-scaled FP4 carries its
scales in its dtype size (`sim.units`): NVFP4 0.5 + 1/16 bytes a value (one e4m3 scale
per 16), MXFP4 0.5 + 1/32 (one e8m0 scale per 32); their per-tensor fp32 scale is not
counted. fp8 is e4m3 with one fp32 scale per tensor (not counted), or with
`fp8_scales: block` DeepSeek-V3's recipe: weights with one fp32 scale per 128×128 block
(+4/16384 bytes a weight) and activations with one per 1×128 tile (+4/128 bytes a value).
The tensors between matmuls (the residual stream, its norms, all-reduces and
element-wise ops) are `io`: the activation dtype, unless the runtime keeps them wider
(FP8 GEMMs with a BF16 residual stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.errors import LlmsimError
from sim.spec.precision import PrecisionSpec
from sim.units import dtype_bytes


@dataclass(frozen=True)
class Precision:
    """Separate dtypes for weights, activations and the KV cache. Matmuls run at the
    activation dtype (weight-only int8/int4 dequantise on the fly)."""

    weights: str = "bf16"
    activations: str = "bf16"
    kv: str = "bf16"
    group_size: int = 64  # int8/int4 values share an fp16 scale and zero per group
    io: str | None = None  # between matmuls; None: the activation dtype
    fp8_scales: str = "tensor"  # fp8: one scale per tensor, or per 128×128 / 1×128 block
    w_bytes: float = field(init=False, repr=False, compare=False)
    a_bytes: float = field(init=False, repr=False, compare=False)
    kv_bytes: float = field(init=False, repr=False, compare=False)
    io_bytes: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = []
        for role in ("weights", "activations", "kv"):
            try:
                sizes.append(dtype_bytes(getattr(self, role)))
            except ValueError as exc:
                raise LlmsimError(str(exc), key=f"precision.{role}") from None
        if self.group_size < 1:
            raise LlmsimError("must be at least 1", key="precision.group_size")
        # Group-wise quantised values carry 4 bytes (fp16 scale and zero) per group.
        overhead = 4.0 / self.group_size
        if self.weights in QUANTISED:
            sizes[0] += overhead
        if self.kv in QUANTISED:
            sizes[2] += overhead
        if self.fp8_scales not in FP8_SCALES:
            raise LlmsimError(
                f"unknown fp8 scaling {self.fp8_scales!r}; valid: {', '.join(FP8_SCALES)}",
                key="precision.fp8_scales",
            )
        if self.fp8_scales == "block":
            if self.weights == "fp8":
                sizes[0] += FP8_WEIGHT_BLOCK_SCALE_BYTES
            if self.activations == "fp8":
                sizes[1] += FP8_ACTIVATION_TILE_SCALE_BYTES
        # Byte sizes are read on the hot path: resolve them once.
        object.__setattr__(self, "w_bytes", sizes[0])
        object.__setattr__(self, "a_bytes", sizes[1])
        object.__setattr__(self, "kv_bytes", sizes[2])
        try:
            io = dtype_bytes(self.io) if self.io is not None else sizes[1]
        except ValueError as exc:
            raise LlmsimError(str(exc), key="runtime.io_dtype") from None
        object.__setattr__(self, "io_bytes", io)

    @property
    def compute_dtype(self) -> str:
        return self.activations

    @classmethod
    def of(cls, spec: PrecisionSpec, io: str | None = None) -> Precision:
        """The precision a scenario's `precision:` asks for (KV defaults to activations),
        with the runtime's `io` dtype between matmuls."""
        kv = spec.kv or spec.activations
        return cls(spec.weights, spec.activations, kv, spec.group_size, io, spec.fp8_scales)


QUANTISED = ("int8", "int4")  # group-wise, with an fp16 scale and zero per group
# Weight formats a GEMM with wider activations dequantises on the fly (W4A16, W8A16).
WEIGHT_ONLY = ("int8", "int4", "nvfp4", "mxfp4")
FP8_SCALES = ("tensor", "block")
FP8_WEIGHT_BLOCK_SCALE_BYTES = 4.0 / (128 * 128)  # one fp32 per 128×128 weight block
FP8_ACTIVATION_TILE_SCALE_BYTES = 4.0 / 128  # one fp32 per 1×128 activation tile


DEQUANT_FLOPS_PER_VALUE = 4.0


def kv_value_bytes(kv: str | Precision) -> float:
    """Bytes of one cached K or V value: a dtype's size, or a precision's (whose
    group-wise quantised KV also carries its scales and zeros)."""
    return kv.kv_bytes if isinstance(kv, Precision) else dtype_bytes(kv)
