"""The calibrated kernel: op times from a device's calibration profile.

For a GEMM it first looks for measurements: the same (n, k) measured over a range of
token counts that holds the asked m is interpolated log-log in m; a measured shape
within a factor of two in n and k is interpolated the same way and scaled to the asked
shape by the ratio of their rooflines (FLOPs where compute-bound, bytes where memory-
bound). Anything else comes from the profile's fitted surface, which predicts any shape.
Memory-bound families and attention come from their fitted efficiency curves; attention
from the curve fitted to the op's own (heads, kv_heads, head_dim) when the profile
measured that shape, else from one of the same grouping (heads per K/V head), else from
the curve of every shape. A family the profile lacks falls back to the roofline kernel.
Points timed in another runtime's form (`form:` in the profile) are not used here: see
sim.cost.hf_eager.

Whatever the source, the result is never below the physical roofline of the op.
Dtypes other than the profile's are priced at the same efficiency relative to their own
roofline (an fp8 GEMM on an H100 runs at the efficiency bf16 measured).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from sim.arith.ops import (
    Op,
    Work,
    gemm_matrices,
    gemm_rows,
    kv_read_bytes_per_token,
    op_active,
    op_bytes,
    op_flops,
)
from sim.arith.precision import Precision
from sim.cost.curves import ScalarCurve, SurfacePoint, curve_at
from sim.cost.roofline import RooflineKernel
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import AttentionFit, Profile
from sim.units import dtype_bytes

STREAM_FAMILY = {
    "norm": "norm",
    "norm_2": "norm",
    "rotary": "rotary",
    "mlp_act": "act",
    "residual_add": "add",
    "residual_add_2": "add",
    "embedding": "embedding",
}


class CalibratedKernel:
    def __init__(self, device: DeviceSpec, precision: Precision, profile: Profile):
        self.device = device
        self.precision = precision
        self.profile = profile
        self.fit = profile.fit
        self.fallback = RooflineKernel(device, precision)
        self._ideal = RooflineKernel(device, precision, ideal=True)
        self.flops_per_s = device.flops(precision.compute_dtype)
        self.bytes_per_s = device.memory_bandwidth_bytes_per_s
        self._measured: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        by_shape: dict[tuple[int, int], list[tuple[int, float]]] = defaultdict(list)
        for p in profile.measurements.gemm:
            if p.form is None:
                by_shape[(p.n, p.k)].append((p.m, p.median_s))
        for shape, pts in by_shape.items():
            pts.sort()
            m = np.log2([p[0] for p in pts])
            t = np.log([p[1] for p in pts])
            self._measured[shape] = (m, t)
        size = dtype_bytes(profile.dtype)
        self._profile_bytes = size
        self._surface = SurfacePoint(self.fit.gemm.surface) if self.fit.gemm else None
        self._streams = {
            family: (stream.launch_s, ScalarCurve(stream.efficiency))
            for family in set(STREAM_FAMILY.values())
            if (stream := getattr(self.fit, family)) is not None
        }
        self._attention: dict[tuple[int, int, int], AttentionCurves | None] = {}
        self._cache: dict[tuple[int, int, float], float] = {}

    # ------------------------------------------------------------------ the kernel
    def source(self, op: Op) -> str:
        if op.kind == "gemm" and self.fit.gemm is not None:
            return "calibrated"
        if op.kind in ("attn_prefill", "attn_decode") and self.attention_curves(op) is not None:
            return "calibrated"
        family = STREAM_FAMILY.get(op.name)
        if family is not None and getattr(self.fit, family) is not None:
            return "calibrated"
        return "roofline"

    def op_time(self, op: Op, work: Work) -> float:
        if op.kind == "all_reduce" or not op_active(op, work):
            return 0.0
        t = self._time(op, work)
        return max(t, self._ideal.op_time(op, work))  # never below the roofline

    def attention_curves(self, op: Op) -> AttentionCurves | None:
        """The attention fit for the op's shape (see the module docstring), or None."""
        key = (op.heads, op.kv_heads, op.head_dim)
        if key not in self._attention:
            fit = pick_attention(self.fit.attention_shapes, *key, form=None)
            fit = fit or self.fit.attention
            self._attention[key] = AttentionCurves(fit) if fit is not None else None
        return self._attention[key]

    def _time(self, op: Op, work: Work) -> float:
        if op.kind == "gemm" and self.fit.gemm is not None:
            return self._gemm(op, work.tokens)
        if op.kind in ("attn_prefill", "attn_decode"):
            curves = self.attention_curves(op)
            if curves is not None:
                return curves.time(op, work, self.precision, self.flops_per_s, self.bytes_per_s)
        family = STREAM_FAMILY.get(op.name)
        stream = self._streams.get(family) if family else None
        if stream is not None:
            launch, curve = stream
            moved = op_bytes(op, work, self.precision)
            return launch + moved / (self.bytes_per_s * curve(math.log2(max(moved, 1.0))))
        return self.fallback.op_time(op, work)

    def launch_part(self, op: Op, work: Work) -> float:
        """The fitted launch share of an op's time (GEMMs: none; their measured times
        are execution-bound at model shapes)."""
        if op.kind == "all_reduce" or not op_active(op, work):
            return 0.0
        if op.kind == "gemm" and self.fit.gemm is not None:
            return 0.0
        if op.kind in ("attn_prefill", "attn_decode"):
            curves = self.attention_curves(op)
            if curves is not None:
                att = curves.fit
                return att.prefill_launch_s if op.kind == "attn_prefill" else att.decode_launch_s
        family = STREAM_FAMILY.get(op.name)
        stream = self._streams.get(family) if family else None
        if stream is not None:
            return stream[0]
        return self.fallback.launch_part(op, work)

    def decode_attention_times(self, op: Op, seqs: int, kv_tokens: np.ndarray) -> np.ndarray:
        """Vectorised `op_time` of decode attention over many KV totals."""
        curves = self.attention_curves(op)
        if curves is None or seqs == 0:
            return self.fallback.decode_attention_times(op, seqs, kv_tokens)
        t = curves.decode_times(op, kv_tokens, self.precision, self.bytes_per_s)
        out: np.ndarray = np.maximum(t, self._ideal.decode_attention_times(op, seqs, kv_tokens))
        return out

    # ------------------------------------------------------------------ GEMMs
    def _roofline(self, m: float, n: int, k: int) -> float:
        p = self.precision
        flops = 2.0 * m * n * k
        moved = n * k * p.w_bytes + m * (n + k) * p.a_bytes
        return max(flops / self.flops_per_s, moved / self.bytes_per_s)

    def _gemm(self, op: Op, tokens: int) -> float:
        # MoE experts: a grouped GEMM over the experts the tokens reach (or every
        # expert's fixed buffer under a capacity factor); an op only some layers run
        # (DeepSeek's dense first layers, its MoE layers) counts for its share of them.
        if op.top_k:
            matrices = gemm_matrices(op, tokens)
            rows = gemm_rows(op, tokens) / matrices
            return op.layer_share * matrices * self._gemm_shape(rows, op.n, op.k)
        return op.layer_share * op.count * self._gemm_shape(float(tokens), op.n, op.k)

    def _gemm_shape(self, m: float, n: int, k: int) -> float:
        key = (n, k, m)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        t = self._measured_gemm(m, n, k)
        if t is None:
            assert self._surface is not None
            y = self._surface(math.log2(m), math.log2(n), math.log2(k))
            t = self._roofline(m, n, k) * math.exp(y)
        self._cache[key] = t
        return t

    def _measured_gemm(self, m: float, n: int, k: int) -> float | None:
        if not self._measured:
            return None
        lm = math.log2(m)
        best, dist = None, 1.0 + 1e-9  # within a factor of two in n and k
        for (mn, mk), (ms, _) in self._measured.items():
            if not ms[0] <= lm <= ms[-1]:
                continue
            d = max(abs(math.log2(mn / n)), abs(math.log2(mk / k)))
            if d <= dist:
                best, dist = (mn, mk), d
        if best is None:
            return None
        ms, ts = self._measured[best]
        t_measured = math.exp(float(np.interp(lm, ms, ts)))
        # Scale from the measured shape and dtype to the asked ones by their rooflines.
        measured_roof = self._profile_roofline(m, *best)
        return t_measured * self._roofline(m, n, k) / measured_roof

    def _profile_roofline(self, m: float, n: int, k: int) -> float:
        size = self._profile_bytes
        flops = 2.0 * m * n * k
        moved = (n * k + m * (n + k)) * size
        peak = self.device.flops(self.profile.dtype)
        return max(flops / peak, moved / self.bytes_per_s)


# ---------------------------------------------------------------------- attention fits


def pick_attention(
    fits: tuple[AttentionFit, ...], heads: int, kv_heads: int, head_dim: int, form: str | None
) -> AttentionFit | None:
    """The fit of this (heads, kv_heads, head_dim) in `form`; else, of the fits in that
    form with as many heads per K/V head (one: MHA; more: GQA or MQA), the nearest in
    heads and head_dim; else None."""
    shaped = [
        (f, f.heads, f.kv_heads, f.head_dim)
        for f in fits
        if f.form == form and f.heads and f.kv_heads and f.head_dim
    ]
    group = heads // max(kv_heads, 1)
    best, best_d = None, math.inf
    for f, h, hk, dh in shaped:
        if (h, hk, dh) == (heads, kv_heads, head_dim):
            return f
        d = abs(math.log2(h / heads)) + abs(math.log2(dh / head_dim))
        if h // hk == group and d < best_d:
            best, best_d = f, d
    return best


class AttentionCurves:
    """One attention fit, read one value at a time."""

    def __init__(self, fit: AttentionFit):
        self.fit = fit
        self.prefill = ScalarCurve(fit.prefill_compute)
        self.decode = ScalarCurve(fit.decode_memory)

    def time(
        self, op: Op, work: Work, precision: Precision, flops_per_s: float, bytes_per_s: float
    ) -> float:
        if op.kind == "attn_prefill":
            flops = op_flops(op, work)
            eff = self.prefill(math.log2(max(flops, 1.0)))
            return self.fit.prefill_launch_s + flops / (flops_per_s * eff)
        kv = float(work.decode_kv_tokens) * kv_read_bytes_per_token(op, precision)
        eff = self.decode(math.log2(max(kv, 1.0)))
        return self.fit.decode_launch_s + kv / (bytes_per_s * eff)

    def decode_times(
        self, op: Op, kv_tokens: np.ndarray, precision: Precision, bytes_per_s: float
    ) -> np.ndarray:
        """`time` of decode attention over many KV totals at once (no floor applied)."""
        kv = np.asarray(kv_tokens * kv_read_bytes_per_token(op, precision), dtype=float)
        eff = curve_at(self.fit.decode_memory, np.log2(np.maximum(kv, 1.0)))
        out: np.ndarray = self.fit.decode_launch_s + kv / (bytes_per_s * eff)
        return out
