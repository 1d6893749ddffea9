"""The roofline kernel: an op takes max(FLOPs / (peak·η_c), bytes / (bandwidth·η_m))
plus one kernel launch.

η (the device's `efficiency`) derates peak to what tuned kernels reach; with η ≤ 1 the
price is never below the physical roofline, which `floor_time` gives with η = 1 and no
launch overhead.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sim.arith.ops import (
    Op,
    Work,
    attn_decode_fixed_bytes,
    dequant_flops,
    kv_read_bytes_per_token,
    kv_width,
    op_active,
    op_bytes,
    op_flops,
)
from sim.arith.precision import DEQUANT_FLOPS_PER_VALUE, QUANTISED, Precision
from sim.spec.hardware import DeviceSpec


class OpKernel(Protocol):
    """Prices one op of one layer on one device for a unit of work."""

    device: DeviceSpec
    precision: Precision

    def op_time(self, op: Op, work: Work) -> float: ...

    def decode_attention_times(self, op: Op, seqs: int, kv_tokens: np.ndarray) -> np.ndarray: ...

    def launch_part(self, op: Op, work: Work) -> float:
        """The share of `op_time` that is launching the kernel (eager mode)."""
        ...

    def source(self, op: Op) -> str: ...


class RooflineKernel:
    def __init__(self, device: DeviceSpec, precision: Precision, *, ideal: bool = False):
        self.device = device
        self.precision = precision
        eff = device.efficiency
        self.flops_per_s = device.flops(precision.compute_dtype) * (1.0 if ideal else eff.compute)
        self.bytes_per_s = device.memory_bandwidth_bytes_per_s * (1.0 if ideal else eff.memory)
        self.launch_s = 0.0 if ideal else device.launch_overhead_s
        # Dequantisation runs on the general-purpose cores: the device's fp32 rate.
        self.scalar_flops_per_s = device.flops("fp32") * (1.0 if ideal else eff.compute)

    def op_time(self, op: Op, work: Work) -> float:
        if op.kind == "all_reduce" or not op_active(op, work):
            return 0.0
        flops = op_flops(op, work)
        moved = op_bytes(op, work, self.precision)
        dequant = dequant_flops(op, work, self.precision) / self.scalar_flops_per_s
        launch = self.launch_s * op.layer_share  # launched in the layers that run it
        return max(flops / self.flops_per_s, moved / self.bytes_per_s, dequant) + launch

    def decode_attention_times(self, op: Op, seqs: int, kv_tokens: np.ndarray) -> np.ndarray:
        """`op_time` of decode attention for many KV totals at once (exact, vectorised):
        FLOPs and bytes are both affine in the KV tokens read."""
        if seqs == 0:
            return np.zeros_like(kv_tokens)
        p = self.precision
        per_kv_flops = 4.0 * op.heads * op.head_dim * op.share
        per_kv_bytes = kv_read_bytes_per_token(op, p)
        fixed_bytes = seqs * attn_decode_fixed_bytes(op, p)
        compute = kv_tokens * (per_kv_flops / self.flops_per_s)
        memory = (fixed_bytes + kv_tokens * per_kv_bytes) / self.bytes_per_s
        out: np.ndarray = np.maximum(compute, memory)
        if p.kv in QUANTISED:
            per_kv_dequant = kv_width(op) * op.share * DEQUANT_FLOPS_PER_VALUE
            out = np.maximum(out, kv_tokens * per_kv_dequant / self.scalar_flops_per_s)
        return out + self.launch_s

    def launch_part(self, op: Op, work: Work) -> float:
        if op.kind == "all_reduce" or not op_active(op, work):
            return 0.0
        return self.launch_s * op.layer_share

    def source(self, op: Op) -> str:
        return "roofline"


def floor_time(device: DeviceSpec, precision: Precision, op: Op, work: Work) -> float:
    """The physical lower bound of an op: peak FLOP/s and peak bandwidth, no overhead."""
    return RooflineKernel(device, precision, ideal=True).op_time(op, work)
