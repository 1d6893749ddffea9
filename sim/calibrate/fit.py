"""Fitting shape-based curves to measured op times (per op family, per device).

GEMMs: the log of measured time over the ideal roofline, log(t / max(FLOPs / peak,
bytes / bandwidth)), is fitted as a smooth surface over (log2 m, log2 n, log2 k) on a
grid — trilinear between grid points, with a penalty on second differences along each
axis so the surface is smooth and extends sensibly to shapes no model had. A model that
was never profiled is predicted from its shapes. Points measured faster than the
physical roofline are measurement errors and are dropped (and counted).

Memory-bound families (norm, activation, rotary, residual add, embedding gather):
t = launch + bytes / (bandwidth · efficiency(log2 bytes)). Attention: prefill against
peak FLOP/s, decode against bandwidth, likewise: one fit of every shape, and one per
measured (heads, kv_heads, head_dim) and form. Ops timed as transformers runs them
(`form: hf`) are fitted apart, one stream curve per kernel (`fit.hf`), and never mixed
into the one-kernel fits. Collectives: t = α + bytes / β per (op, fabric, device
count). Copies: a bandwidth.

Curves are binned medians, so a few wild points do not move them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import lsqr

from sim.cost.curves import stream_time
from sim.cost.hf_eager import HF_WRITE_PER_READ
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import (
    AttentionFit,
    AttentionPoint,
    CollectiveFit,
    CollectivePoint,
    CopyPoint,
    Curve,
    ElementwisePoint,
    Fit,
    GemmFit,
    GemmPoint,
    Measurements,
    StreamFit,
    Surface,
)
from sim.units import dtype_bytes

# Elements written per element read, by element-wise family (norm reads d, writes d;
# the gated activation reads 2·ff, writes ff; residual add reads 2·d, writes d).
WRITE_PER_READ = {"norm": 1.0, "act": 0.5, "rotary": 1.0, "add": 0.5, "embedding": 1.0}

GRID_LO = (0.0, 6.0, 6.0)  # log2 of m, n, k
GRID_HI = (13.0, 17.0, 17.0)
SMOOTHING = 1.0
MAX_SLOWDOWN = 8.0  # clamp of log(t / roofline): a fitted GEMM is at most e^8 slower


# ------------------------------------------------------------------------- surfaces


def _grid_shape(lo: Sequence[float], hi: Sequence[float], step: float) -> tuple[int, int, int]:
    a, b, c = (round((h - low) / step) + 1 for low, h in zip(lo, hi, strict=True))
    return a, b, c


def _trilinear(surface: Surface, x: np.ndarray) -> Any:
    """Interpolation weights of points x (n×3, log2 units) on the surface's grid, as a
    sparse matrix."""
    shape = np.array(surface.shape)
    lo = np.array(surface.lo)
    g = (np.clip(x, lo, lo + (shape - 1) * surface.step) - lo) / surface.step
    i0 = np.minimum(np.floor(g).astype(int), shape - 2)
    frac = g - i0
    n = len(x)
    rows, cols, vals = [], [], []
    for corner in range(8):
        bits = [(corner >> d) & 1 for d in range(3)]
        w = np.ones(n)
        index = []
        for d in range(3):
            w = w * (frac[:, d] if bits[d] else 1.0 - frac[:, d])
            index.append(i0[:, d] + bits[d])
        rows.append(np.arange(n))
        cols.append(np.ravel_multi_index(index, surface.shape))
        vals.append(w)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, int(np.prod(surface.shape))),
    )


def surface_at(surface: Surface, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = _trilinear(surface, np.atleast_2d(x)) @ np.asarray(surface.values)
    return out


def _second_differences(shape: tuple[int, int, int]) -> Any:
    size = int(np.prod(shape))
    idx = np.arange(size).reshape(shape)
    blocks = []
    for axis in range(3):
        if shape[axis] < 3:
            continue
        lo = np.take(idx, range(0, shape[axis] - 2), axis=axis).ravel()
        mid = np.take(idx, range(1, shape[axis] - 1), axis=axis).ravel()
        hi = np.take(idx, range(2, shape[axis]), axis=axis).ravel()
        k = np.arange(len(mid))
        blocks.append(
            sparse.csr_matrix(
                (
                    np.concatenate([np.ones(len(k)), -2 * np.ones(len(k)), np.ones(len(k))]),
                    (np.concatenate([k, k, k]), np.concatenate([lo, mid, hi])),
                ),
                shape=(len(k), size),
            )
        )
    return sparse.vstack(blocks).tocsr()


def fit_surface(
    x: np.ndarray,
    y: np.ndarray,
    *,
    lo: Sequence[float] = GRID_LO,
    hi: Sequence[float] = GRID_HI,
    step: float = 1.0,
    smoothing: float = SMOOTHING,
    prior: Surface | None = None,
) -> Surface:
    """Least squares fit of y at x on a grid, with a second-difference penalty; with a
    prior, the fit is of the residual and the prior is added back."""
    shape = _grid_shape(lo, hi, step)
    empty = Surface(lo=tuple(lo), step=step, shape=shape, values=(0.0,) * int(np.prod(shape)))
    target = y - (surface_at(prior, x) if prior is not None else 0.0)
    a = _trilinear(empty, x)
    penalty = _second_differences(shape) * np.sqrt(smoothing)
    system = sparse.vstack([a, penalty]).tocsr()
    rhs = np.concatenate([target, np.zeros(penalty.shape[0])])
    values = lsqr(system, rhs, atol=1e-10, btol=1e-10, iter_lim=50_000)[0]
    if prior is not None:
        values = values + np.asarray(prior.values)
    values = np.clip(values, 0.0, MAX_SLOWDOWN)
    return Surface(
        lo=(float(lo[0]), float(lo[1]), float(lo[2])),
        step=step,
        shape=shape,
        values=tuple(round(float(v), 6) for v in values),
    )


# ------------------------------------------------------------------------- GEMMs


def gemm_bytes(m: Any, n: Any, k: Any, w_bytes: float, a_bytes: float) -> Any:
    """Bytes a GEMM x[m,k] @ w[k,n] moves at least: the weight once, the input and the
    output once (scalars or arrays)."""
    return n * k * w_bytes + m * (n + k) * a_bytes


def gemm_roofline(
    m: np.ndarray,
    n: np.ndarray,
    k: np.ndarray,
    flops_per_s: float,
    bytes_per_s: float,
    w_bytes: float,
    a_bytes: float,
) -> np.ndarray:
    flops = 2.0 * m * n * k
    moved = gemm_bytes(m, n, k, w_bytes, a_bytes)
    out: np.ndarray = np.maximum(flops / flops_per_s, moved / bytes_per_s)
    return out


def gemm_arrays(points: Iterable[GemmPoint]) -> tuple[np.ndarray, ...]:
    pts = list(points)
    m = np.array([p.m for p in pts], dtype=float)
    n = np.array([p.n for p in pts], dtype=float)
    k = np.array([p.k for p in pts], dtype=float)
    t = np.array([p.median_s for p in pts], dtype=float)
    return m, n, k, t


def gemm_targets(
    points: Sequence[GemmPoint], device: DeviceSpec, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x in log2 units, y = log(t / roofline), mask of points not faster than physics)."""
    m, n, k, t = gemm_arrays(points)
    size = dtype_bytes(dtype)
    roof = gemm_roofline(
        m, n, k, device.flops(dtype), device.memory_bandwidth_bytes_per_s, size, size
    )
    ok = t >= roof
    x = np.column_stack([np.log2(m), np.log2(n), np.log2(k)])
    return x, np.log(np.maximum(t, roof) / roof), ok


def fit_gemm(
    points: Sequence[GemmPoint],
    device: DeviceSpec,
    dtype: str,
    prior: Surface | None = None,
    smoothing: float = SMOOTHING,
) -> tuple[GemmFit, dict[str, float]]:
    x, y, ok = gemm_targets(points, device, dtype)
    surface = fit_surface(x[ok], y[ok], prior=prior, smoothing=smoothing)
    fit = GemmFit(
        surface=surface,
        peak_flops=device.flops(dtype),
        bandwidth_bytes_per_s=device.memory_bandwidth_bytes_per_s,
    )
    pred = np.exp(surface_at(surface, x[ok]))
    err = np.abs(pred / np.exp(y[ok]) - 1.0) * 100
    return fit, _quality(err, dropped=int((~ok).sum()))


# ------------------------------------------------------------------------- curves


def binned_curve(log2_x: np.ndarray, y: np.ndarray, width: float = 1.0) -> Curve:
    """Medians of y in bins of log2 x, as a piecewise-linear curve."""
    if len(y) == 0:
        return Curve(log2_x=(0.0,), y=(1.0,))
    bins = np.floor(log2_x / width)
    xs, ys = [], []
    for b in np.unique(bins):
        sel = bins == b
        xs.append(float(np.median(log2_x[sel])))
        ys.append(float(np.median(y[sel])))
    return Curve(log2_x=tuple(round(v, 4) for v in xs), y=tuple(round(v, 6) for v in ys))


def _launch(times: np.ndarray) -> float:
    """A kernel's fixed cost: a little under the fastest measured time."""
    return float(np.min(times)) * 0.9 if len(times) else 0.0


def fit_stream(moved: np.ndarray, times: np.ndarray, bandwidth: float) -> StreamFit:
    launch = _launch(times)
    eff = moved / (bandwidth * np.maximum(times - launch, 1e-12))
    curve = binned_curve(np.log2(moved), np.clip(eff, 1e-6, 1.0))
    return StreamFit(launch_s=launch, efficiency=curve)


def elementwise_bytes(p: ElementwisePoint, a_bytes: float) -> float:
    if p.form == "hf" and p.kernel in HF_WRITE_PER_READ:
        return p.tokens * p.width * (1.0 + HF_WRITE_PER_READ[p.kernel]) * a_bytes
    return p.tokens * p.width * (1.0 + WRITE_PER_READ[p.op]) * a_bytes


def attention_flops(p: AttentionPoint) -> float:
    done = p.kv_len - p.q_len
    pairs = p.q_len * done + p.q_len * (p.q_len + 1) / 2
    return 4.0 * p.batch * pairs * p.heads * p.head_dim


def attention_kv_bytes(p: AttentionPoint, kv_bytes: float) -> float:
    return p.batch * p.kv_len * 2.0 * p.kv_heads * p.head_dim * kv_bytes


def fit_attention(
    points: Sequence[AttentionPoint], device: DeviceSpec, dtype: str, source: str = ""
) -> AttentionFit | None:
    """Prefill: a stream curve of FLOPs against peak FLOP/s; decode: one of K/V bytes
    against bandwidth. Of the points given, whatever their shape and form."""
    pre = [p for p in points if p.phase == "prefill"]
    dec = [p for p in points if p.phase == "decode"]
    if not pre or not dec:
        return None
    size = dtype_bytes(dtype)
    prefill = fit_stream(
        np.array([attention_flops(p) for p in pre]),
        np.array([p.median_s for p in pre]),
        device.flops(dtype),
    )
    decode = fit_stream(
        np.array([attention_kv_bytes(p, size) for p in dec]),
        np.array([p.median_s for p in dec]),
        device.memory_bandwidth_bytes_per_s,
    )
    return AttentionFit(
        prefill_launch_s=prefill.launch_s,
        prefill_compute=prefill.efficiency,
        decode_launch_s=decode.launch_s,
        decode_memory=decode.efficiency,
        source=source,
    )


def fit_attention_shapes(
    points: Sequence[AttentionPoint], device: DeviceSpec, dtype: str
) -> tuple[AttentionFit, ...]:
    """One attention fit per measured (form, heads, kv_heads, head_dim)."""
    groups: dict[tuple[str, int, int, int], list[AttentionPoint]] = defaultdict(list)
    for p in points:
        groups[(p.form or "", p.heads, p.kv_heads, p.head_dim)].append(p)
    fits = []
    for (form, h, hk, d), pts in sorted(groups.items()):
        what = f"measured, {h} heads / {hk} K/V heads / head_dim {d}"
        fit = fit_attention(pts, device, dtype, what + (f", {form} form" if form else ""))
        if fit is not None:
            fits.append(
                fit.model_copy(
                    update={"heads": h, "kv_heads": hk, "head_dim": d, "form": form or None}
                )
            )
    return tuple(fits)


def fit_hf_streams(
    points: Sequence[ElementwisePoint], device: DeviceSpec, dtype: str
) -> tuple[dict[str, StreamFit], dict[str, dict[str, float]]]:
    """One stream curve per kernel timed in the hf form, and its in-sample errors."""
    size = dtype_bytes(dtype)
    bw = device.memory_bandwidth_bytes_per_s
    kernels = sorted({p.kernel for p in points if p.form == "hf" and p.kernel})
    fits: dict[str, StreamFit] = {}
    quality: dict[str, dict[str, float]] = {}
    for kernel in kernels:
        pts = [p for p in points if p.form == "hf" and p.kernel == kernel]
        moved = np.array([elementwise_bytes(p, size) for p in pts])
        times = np.array([p.median_s for p in pts])
        fits[kernel] = fit_stream(moved, times, bw)
        pred = stream_time(fits[kernel], moved, bw)
        quality[f"hf_{kernel}"] = _quality(np.abs(pred / times - 1) * 100)
    return fits, quality


def fit_collectives(points: Sequence[CollectivePoint]) -> tuple[CollectiveFit, ...]:
    """α–β per (op, fabric, n), weighted for relative error."""
    groups: dict[tuple[str, str, int], list[CollectivePoint]] = defaultdict(list)
    for p in points:
        groups[(p.op, p.fabric, p.n_devices)].append(p)
    fits = []
    for (op, fabric, n), pts in sorted(groups.items()):
        size = np.array([p.bytes for p in pts], dtype=float)
        t = np.array([p.median_s for p in pts], dtype=float)
        if len(pts) < 2 or np.ptp(size) == 0:
            continue
        slope, alpha = np.polyfit(size, t, 1, w=1.0 / t)
        big = size >= np.percentile(size, 75)
        if slope <= 0:  # latency-only data: take bandwidth from the largest messages
            slope = float(np.median(t[big] / size[big]))
        fits.append(
            CollectiveFit(
                op=op,
                fabric=fabric,
                n_devices=n,
                alpha_s=max(float(alpha), 0.0),
                bandwidth_bytes_per_s=1.0 / float(slope),
            )
        )
    return tuple(fits)


def fit_copies(points: Sequence[CopyPoint], direction: str) -> float | None:
    pts = [p for p in points if p.direction == direction]
    if len(pts) < 2:
        return None
    size = np.array([p.bytes for p in pts], dtype=float)
    t = np.array([p.median_s for p in pts], dtype=float)
    big = size >= np.percentile(size, 50)
    return float(np.median(size[big] / t[big]))


def _quality(err: np.ndarray, **extra: float) -> dict[str, float]:
    if len(err) == 0:
        return {"points": 0.0, **extra}
    return {
        "points": float(len(err)),
        "median_abs_pct": round(float(np.median(err)), 3),
        "p90_abs_pct": round(float(np.percentile(err, 90)), 3),
        **extra,
    }


def fit_measurements(
    measurements: Measurements,
    device: DeviceSpec,
    dtype: str = "bf16",
    gemm_prior: Surface | None = None,
    gemm_smoothing: float = SMOOTHING,
) -> tuple[Fit, dict[str, dict[str, float]]]:
    """Every family's curve from one device's measurements, and in-sample errors. The
    GEMM surface is fitted with `gemm_prior` and `gemm_smoothing` (see `fit_surface`)."""
    quality: dict[str, dict[str, float]] = {}
    gemm = None
    if measurements.gemm:
        gemm, quality["gemm"] = fit_gemm(
            measurements.gemm, device, dtype, gemm_prior, gemm_smoothing
        )
    size = dtype_bytes(dtype)
    bw = device.memory_bandwidth_bytes_per_s
    streams: dict[str, StreamFit] = {}
    for family in WRITE_PER_READ:
        pts = [p for p in measurements.elementwise if p.op == family and p.form is None]
        if not pts:
            continue
        moved = np.array([elementwise_bytes(p, size) for p in pts])
        times = np.array([p.median_s for p in pts])
        streams[family] = fit_stream(moved, times, bw)
        pred = stream_time(streams[family], moved, bw)
        quality[family] = _quality(np.abs(pred / times - 1) * 100)
    one_kernel = [p for p in measurements.attention if p.form is None]
    attention = fit_attention(one_kernel, device, dtype, "measured")
    hf, hf_quality = fit_hf_streams(measurements.elementwise, device, dtype)
    quality.update(hf_quality)
    fit = Fit(
        gemm=gemm,
        norm=streams.get("norm"),
        act=streams.get("act"),
        rotary=streams.get("rotary"),
        add=streams.get("add"),
        embedding=streams.get("embedding"),
        attention=attention,
        attention_shapes=fit_attention_shapes(measurements.attention, device, dtype),
        hf=hf,
        collectives=fit_collectives(measurements.collectives),
        copy_h2d_bytes_per_s=fit_copies(measurements.copies, "h2d"),
        copy_d2h_bytes_per_s=fit_copies(measurements.copies, "d2h"),
    )
    return fit, quality
