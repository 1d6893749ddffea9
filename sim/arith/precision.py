"""Dtypes of a deployment: weights, activations and the KV cache, and their bytes.

Matmuls run at the activation dtype (weight-only int8/int4 dequantise on the fly, at
a cost in scalar FLOPs). Group-wise int8/int4 values carry an fp16 scale and zero per
`group_size` values, counted in their bytes. The tensors between matmuls (the residual
stream, its norms, all-reduces and element-wise ops) are `io`: the activation dtype,
unless the runtime keeps them wider (FP8 GEMMs with a BF16 residual stream).
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
        return cls(spec.weights, spec.activations, kv, spec.group_size, io)


QUANTISED = ("int8", "int4")


DEQUANT_FLOPS_PER_VALUE = 4.0


def kv_value_bytes(kv: str | Precision) -> float:
    """Bytes of one cached K or V value: a dtype's size, or a precision's (whose
    group-wise quantised KV also carries its scales and zeros)."""
    return kv.kv_bytes if isinstance(kv, Precision) else dtype_bytes(kv)
