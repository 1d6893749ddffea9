"""Plots as PNG files: the Gantt chart of pipeline stages, metric bar charts, and the
throughput–latency curve of a capacity search.

matplotlib is imported inside each function, never at module level, so commands that
draw nothing (`llmsim run`) do not pay for it. Figures are built on the Agg canvas
directly, without pyplot: no global figure state and no backend switch, so calling
these from a notebook leaves its own backend alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.spec.slo import SLOSpec

PHASE_COLORS = {"prefill": "#1f77b4", "decode": "#ff7f0e", "mixed": "#2ca02c"}
SHADES = (0.0, 0.35, 0.6)  # mixed with white: neighbouring micro-batches differ
MAX_LABELLED_BARS = 80


@dataclass
class GanttPanel:
    """One subplot: a variant's stage executions within a time window."""

    label: str
    stages: pd.DataFrame | None  # replica, stage, engine, microbatch, start_s, end_s, phase
    window_s: tuple[float, float] | None
    n_stages: int
    error: str | None = None
    note: str = ""


def _shade(color: str, amount: float) -> tuple[float, float, float]:
    # matplotlib loads only when a plot is drawn (start-up time)
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def _figure(width: float, height: float) -> Any:
    # matplotlib loads only when a plot is drawn (start-up time)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _draw_panel(ax: Any, panel: GanttPanel) -> None:
    title = panel.label + (f"  ({panel.note})" if panel.note else "")
    if panel.error is not None:
        ax.set_title(title, loc="left", fontsize=9)
        ax.text(
            0.01,
            0.5,
            f"failed: {panel.error}",
            transform=ax.transAxes,
            va="center",
            fontsize=8,
            color="#b00020",
            wrap=True,
        )
        ax.set_axis_off()
        return
    rows = panel.stages
    window = panel.window_s
    n_stages = max(panel.n_stages, 1)
    ax.set_yticks(range(n_stages), [f"stage {s}" for s in range(n_stages)], fontsize=8)
    ax.set_ylim(n_stages - 0.5, -0.5)  # stage 0 on top
    if rows is None or window is None or len(rows) == 0:
        ax.set_title(title, loc="left", fontsize=9)
        ax.text(0.5, 0.5, "no stage executions", transform=ax.transAxes, ha="center")
        return
    t0, t1 = window
    start_ms = (rows["start_s"].to_numpy() - t0) * 1e3
    dur_ms = (rows["end_s"].to_numpy() - rows["start_s"].to_numpy()) * 1e3
    engine = rows["engine"].to_numpy()
    micro = rows["microbatch"].to_numpy()
    phases = rows["phase"].astype(str).to_numpy()
    several_engines = len(set(engine.tolist())) > 1
    colors = [
        _shade(PHASE_COLORS.get(p, "#7f7f7f"), SHADES[(e + m) % len(SHADES)])
        for p, e, m in zip(phases, engine, micro, strict=True)
    ]
    ax.barh(
        rows["stage"].to_numpy(),
        dur_ms,
        left=start_ms,
        height=0.7,
        color=colors,
        edgecolor="black",
        linewidth=0.5,
    )
    span_ms = (t1 - t0) * 1e3
    if len(rows) <= MAX_LABELLED_BARS:
        for y, x, w, e, m in zip(rows["stage"], start_ms, dur_ms, engine, micro, strict=True):
            left, right = max(x, 0.0), min(x + w, span_ms)
            if right - left > span_ms * 0.025:
                text = f"{e}.{m}" if several_engines else str(m)
                ax.text((left + right) / 2, y, text, ha="center", va="center", fontsize=6)
    ax.set_xlim(0, span_ms)
    ax.set_title(f"{title}  [{t0:.3f} s – {t1:.3f} s]", loc="left", fontsize=9)
    ax.set_xlabel(f"ms after {t0:.3f} s", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def gantt(panels: Sequence[GanttPanel], path: str | Path, title: str = "") -> Path:
    """Stages (y) × time (x) per variant, bars coloured by phase; micro-batches alternate
    shade and carry their number (`engine.microbatch` when there are several engines)."""
    # matplotlib loads only when a plot is drawn (start-up time)
    from matplotlib.patches import Patch

    heights = [0.9 + 0.35 * max(p.n_stages, 1) if p.error is None else 0.8 for p in panels]
    fig = _figure(12, sum(heights) + 1.2)
    if panels:
        axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, panel in zip(axes, panels, strict=True):
            _draw_panel(ax, panel)
    handles = [Patch(facecolor=c, edgecolor="black", label=p) for p, c in PHASE_COLORS.items()]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        f"{title} — pipeline stages" if title else "pipeline stages", x=0.01, ha="left", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(path)
    fig.savefig(out)
    return out


def metric_bars(
    labels: Sequence[str],
    metrics: Mapping[str, Sequence[float | None]],
    path: str | Path,
    title: str = "",
) -> Path:
    """One horizontal bar chart per metric, the variants down a shared y axis; a variant
    with no value (failed) is marked instead of drawn."""
    n = len(labels)
    fig = _figure(3.2 * max(len(metrics), 1) + 1.5, 1.4 + 0.35 * max(n, 1))
    axes = fig.subplots(1, max(len(metrics), 1), sharey=True, squeeze=False)[0]
    ys = list(range(n))
    for ax, (name, values) in zip(axes, metrics.items(), strict=False):
        heights = [0.0 if v is None else v for v in values]
        ax.barh(ys, heights, color="#4c72b0", height=0.6)
        top = max(heights, default=0.0) or 1.0
        for y, v in zip(ys, values, strict=True):
            text = "failed" if v is None else f"{v:,.3g}"
            ax.text(
                (v or 0.0) + top * 0.02,
                y,
                text,
                va="center",
                fontsize=7,
                color="#b00020" if v is None else "black",
            )
        ax.set_xlim(0, top * 1.25)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, list(labels))
    axes[0].set_ylim(n - 0.5, -0.5)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def plot_curve(
    curve: pd.DataFrame,
    slos: Sequence[SLOSpec],
    path: str | Path,
    *,
    capacity_rps: float | None = None,
    title: str = "",
) -> Path:
    """Two panels, TTFT and TPOT against offered load: p50 and p99, each SLO bound as a
    horizontal line and the capacity as a vertical one. Drawn on the Agg canvas."""
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2, sharex=True)
    x = curve["offered_rps"].to_numpy(dtype=float)
    panels = (("TTFT", "ttft", "ttft_s"), ("TPOT", "tpot", "tpot_s"))
    for ax, (label, col, bound_attr) in zip(axes, panels, strict=True):
        drawn = False
        for q, style in (("p50", "o--"), ("p99", "s-")):
            y = pd.to_numeric(curve[f"{col}_{q}_s"], errors="coerce").to_numpy(dtype=float) * 1e3
            if np.isfinite(y).any():
                ax.plot(x, y, style, label=f"{label} {q}", markersize=4)
                drawn = True
        bounds = sorted({b for s in slos if (b := getattr(s, bound_attr)) is not None})
        for b in bounds:
            text = f"{b:g} s" if b >= 1 else f"{b * 1e3:g} ms"
            ax.axhline(b * 1e3, color="#b00020", linestyle=":", label=f"SLO {text}")
        if capacity_rps:
            ax.axvline(
                capacity_rps,
                color="#555555",
                linestyle="-.",
                linewidth=1,
                label=f"capacity {capacity_rps:.3g} req/s",
            )
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(f"{label} (ms)")
        if drawn:
            ys = curve[[f"{col}_p50_s", f"{col}_p99_s"]].to_numpy(dtype=float).ravel()
            ys = ys[np.isfinite(ys) & (ys > 0)]
            if ys.size and ys.max() / ys.min() > 50:
                ax.set_yscale("log")
        else:
            ax.text(
                0.5, 0.5, f"no {label} (one-token outputs)", transform=ax.transAxes, ha="center"
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{label} vs offered load", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out
