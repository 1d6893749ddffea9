"""Offloading (FlexGen, Sheng et al. 2023) as a user writes it: the fractions of the
weights, KV cache and activations placed on GPU memory, host DRAM and disk, and the
block shape (`gpu_batches` GPU batches of `gpu_batch_size` sequences). How the
placement is priced lives in sim.cost.offload.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from sim.spec.base import Spec

TIERS = ("gpu", "cpu", "disk")
TENSORS = ("weights", "kv", "activations")


def _fractions(value: tuple[float, float, float], name: str) -> tuple[float, float, float]:
    if any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
        raise ValueError(f"{name}: fractions on gpu, cpu, disk must be ≥ 0 and sum to 1")
    return value


class OffloadSpec(Spec):
    """Where weights, KV cache and activations live, and the block shape."""

    weights: tuple[float, float, float] = (1.0, 0.0, 0.0)
    kv: tuple[float, float, float] = (1.0, 0.0, 0.0)
    activations: tuple[float, float, float] = (1.0, 0.0, 0.0)
    gpu_batch_size: int = Field(default=1, gt=0)
    gpu_batches: int = Field(default=1, gt=0, description="GPU batches per block")
    cpu_attention: bool = Field(
        default=False,
        description="compute attention over host-resident KV on the host CPU instead of "
        "moving that KV to the GPU (FlexGen's CPU delegation)",
    )

    @model_validator(mode="after")
    def _check(self) -> OffloadSpec:
        for name in TENSORS:
            _fractions(getattr(self, name), f"offload.{name}")
        return self

    @property
    def block(self) -> int:
        return self.gpu_batch_size * self.gpu_batches

    def values(self) -> dict[str, float]:
        return {f"{t}.{tier}": getattr(self, t)[i] for t in TENSORS for i, tier in enumerate(TIERS)}
