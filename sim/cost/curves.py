"""Reading fitted calibration curves and surfaces: the calibrated kernel's hot path.

A `Curve` is piecewise linear in log2 of its argument, flat beyond its ends; a `Surface`
is trilinear on a regular grid in (log2 m, log2 n, log2 k), clamped at its edges. The
fits that produce them live in sim.calibrate.fit; these read them, one value at a time
without building arrays, or vectorised for a leap.
"""

from __future__ import annotations

import bisect

import numpy as np

from sim.spec.profile import Curve, StreamFit, Surface


class SurfacePoint:
    """Fast scalar reads of a surface (the kernel's hot path): plain trilinear weights,
    no matrix built per call."""

    def __init__(self, surface: Surface):
        self.lo = surface.lo
        self.step = surface.step
        self.shape = surface.shape
        self.values = np.asarray(surface.values).reshape(surface.shape)

    def __call__(self, x: float, y: float, z: float) -> float:
        idx = []
        frac = []
        for value, lo, size in zip((x, y, z), self.lo, self.shape, strict=True):
            g = (min(max(value, lo), lo + (size - 1) * self.step) - lo) / self.step
            i = min(int(g), size - 2)
            idx.append(i)
            frac.append(g - i)
        (i, j, k), (a, b, c) = idx, frac
        v = self.values
        return float(
            (1 - a)
            * (
                (1 - b) * ((1 - c) * v[i, j, k] + c * v[i, j, k + 1])
                + b * ((1 - c) * v[i, j + 1, k] + c * v[i, j + 1, k + 1])
            )
            + a
            * (
                (1 - b) * ((1 - c) * v[i + 1, j, k] + c * v[i + 1, j, k + 1])
                + b * ((1 - c) * v[i + 1, j + 1, k] + c * v[i + 1, j + 1, k + 1])
            )
        )


class ScalarCurve:
    """A curve read one value at a time without numpy (the kernel's hot path); equal
    to `curve_at` (linear between points, flat beyond the ends)."""

    def __init__(self, curve: Curve):
        self.xs = list(curve.log2_x)
        self.ys = list(curve.y)

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, x)
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - x0) / (x1 - x0)


def curve_at(curve: Curve, log2_x: np.ndarray | float) -> np.ndarray:
    out: np.ndarray = np.asarray(np.interp(log2_x, curve.log2_x, curve.y))
    return out


def stream_time(fit: StreamFit, moved: np.ndarray | float, bandwidth: float) -> np.ndarray:
    moved_arr = np.asarray(moved, dtype=float)
    eff = curve_at(fit.efficiency, np.log2(np.maximum(moved_arr, 1.0)))
    out: np.ndarray = fit.launch_s + moved_arr / (bandwidth * eff)
    return out
