"""The dtypes a deployment stores and computes in, as a user writes them: weights,
activations and the KV cache, the group size of group-wise int8/int4 and how fp8 is
scaled (one scale per tensor, or DeepSeek-V3's 128×128 weight / 1×128 activation
blocks). nvfp4 and mxfp4 carry their block scales in their size."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sim.spec.base import Spec
from sim.units import DTYPE_BYTES


class PrecisionSpec(Spec):
    weights: str = "bf16"
    activations: str = "bf16"
    kv: str | None = Field(default=None, description="defaults to the activation dtype")
    group_size: int = Field(
        default=64, gt=0, description="int8/int4: values per fp16 scale and zero (group-wise)"
    )
    fp8_scales: Literal["tensor", "block"] = Field(
        default="tensor",
        description="fp8: one fp32 scale per tensor, or per 128×128 weight / 1×128 input block",
    )

    @field_validator("weights", "activations", "kv")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPE_BYTES)}")
        return value
