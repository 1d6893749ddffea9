"""Plots as PNG files: the Gantt chart of pipeline stages, metric bar charts, and the
throughput–latency curve of a capacity search.

matplotlib is imported inside each function, never at module level, so commands that
draw nothing (`llmsim run`) do not pay for it. Figures are built on the Agg canvas
directly, without pyplot: no global figure state and no backend switch, so calling
these from a notebook leaves its own backend alone.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.spec.slo import SLOSpec

PHASE_COLORS = {"prefill": "#1f77b4", "decode": "#ff7f0e", "mixed": "#2ca02c"}
SHADES = (0.0, 0.35, 0.6)  # mixed with white: neighbouring micro-batches differ
MAX_LABELLED_BARS = 300  # a panel of more bars is drawn without labels (text is slow)
MIN_LABELLED_SHARE = 0.025  # a bar narrower than this share of the window carries no label
POOL_ROLES = ("prefill", "decode")  # roles a row names (a colocated replica does both)
GANTT_CAPTION = (
    "Each bar is one stage running one micro-batch, coloured by phase. Its label tells the "
    "work apart where a step has several: g<n> the request group (virtual engine) of the "
    "replica, m<n> the micro-batch within the step; neighbouring ones alternate shade. "
    f"Bars narrower than {MIN_LABELLED_SHARE:.1%} of the window, and panels of more than "
    f"{MAX_LABELLED_BARS} bars, carry no label."
)
METRICS_CAPTION = (
    "The number beside each bar is its value, in the unit of the panel's title; "
    "'failed': the variant did not run, so it has no value."
)


@dataclass
class GanttPanel:
    """One subplot: a variant's stage executions within a time window, one row per
    (replica, stage, role) in `rows` (role: "both" for a colocated replica, else
    "prefill" or "decode"); `hidden_rows` more were left out."""

    label: str
    stages: pd.DataFrame | None  # replica, stage, engine, microbatch, start_s, end_s, phase
    window_s: tuple[float, float] | None
    rows: Sequence[tuple[int, int, str]]
    hidden_rows: int = 0
    error: str | None = None
    note: str = ""


def row_label(replica: int, stage: int, role: str) -> str:
    """`r<replica> s<stage>`, and the pool of a disaggregated replica."""
    return f"r{replica} s{stage}" + (f" {role}" if role in POOL_ROLES else "")


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


def _time_unit(span_s: float) -> tuple[str, float]:
    """The x axis's unit: ms for windows under 10 s, else s."""
    return ("ms", 1e3) if span_s < 10 else ("s", 1.0)


def _bar_labels(engine: np.ndarray, micro: np.ndarray) -> list[str]:
    """`g<engine> m<micro-batch>`, each part only where the window holds several."""
    several_engines = len(set(engine.tolist())) > 1
    several_micro = len(set(micro.tolist())) > 1
    return [
        " ".join(([f"g{e}"] if several_engines else []) + ([f"m{m}"] if several_micro else []))
        for e, m in zip(engine.tolist(), micro.tolist(), strict=True)
    ]


def _draw_panel(ax: Any, panel: GanttPanel, span_s: float) -> None:
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
    lanes = list(panel.rows) or [(0, 0, "both")]
    if panel.hidden_rows:
        total = len(lanes) + panel.hidden_rows
        title += f"  [{panel.hidden_rows} of {total} replica×stage rows not shown]"
    ax.set_yticks(range(len(lanes)), [row_label(*lane) for lane in lanes], fontsize=8)
    ax.set_ylim(len(lanes) - 0.5, -0.5)  # the first row on top
    unit, k = _time_unit(span_s)
    ax.set_xlim(0, span_s * k)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    rows = panel.stages
    window = panel.window_s
    if window is not None:
        t0, t1 = window
        title += f"  window {t0:.3f} s – {t1:.3f} s"
        ax.set_xlabel(f"{unit} after {t0:.3f} s", fontsize=8)
    ax.set_title(title, loc="left", fontsize=9)
    y_of = {(r, s): i for i, (r, s, _) in enumerate(lanes)}
    if rows is not None and len(rows):
        ys = [y_of.get((r, s)) for r, s in zip(rows["replica"], rows["stage"], strict=True)]
        rows = rows[[y is not None for y in ys]]
        ys = [y for y in ys if y is not None]
    if rows is None or window is None or len(rows) == 0:
        ax.text(0.5, 0.5, "no stage executions", transform=ax.transAxes, ha="center")
        return
    t0 = window[0]
    start = (rows["start_s"].to_numpy() - t0) * k
    dur = (rows["end_s"].to_numpy() - rows["start_s"].to_numpy()) * k
    engine = rows["engine"].to_numpy()
    micro = rows["microbatch"].to_numpy()
    phases = rows["phase"].astype(str).to_numpy()
    colors = [
        _shade(PHASE_COLORS.get(p, "#7f7f7f"), SHADES[(e + m) % len(SHADES)])
        for p, e, m in zip(phases, engine, micro, strict=True)
    ]
    ax.barh(ys, dur, left=start, height=0.7, color=colors, edgecolor="black", linewidth=0.5)
    if len(rows) <= MAX_LABELLED_BARS:
        span = span_s * k
        for y, x, w, text in zip(ys, start, dur, _bar_labels(engine, micro), strict=True):
            left, right = max(x, 0.0), min(x + w, span)
            if text and right - left > span * MIN_LABELLED_SHARE:
                ax.text((left + right) / 2, y, text, ha="center", va="center", fontsize=6)


def gantt(
    panels: Sequence[GanttPanel], path: str | Path, title: str = "", window_note: str = ""
) -> Path:
    """Rows of (replica, stage) × time per variant, bars coloured by phase, every panel
    on one time axis as long as the longest window (each panel from its own window's
    start). `window_note` says in the figure what the windows are; a caption says what
    the labels in the bars are."""
    # matplotlib loads only when a plot is drawn (start-up time)
    from matplotlib.patches import Patch

    spans = [w[1] - w[0] for p in panels if (w := p.window_s) is not None and p.error is None]
    span_s = max(spans, default=0.0) or 1.0
    heights = [0.9 + 0.3 * max(len(p.rows), 1) if p.error is None else 0.8 for p in panels]
    caption = "\n".join(t for t in (window_note, GANTT_CAPTION) if t)
    foot = _caption_height(caption, 12)
    height = sum(heights) + 1.0 + foot
    fig = _figure(12, height)
    if panels:
        axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, panel in zip(axes, panels, strict=True):
            _draw_panel(ax, panel, span_s)
    handles = [Patch(facecolor=c, edgecolor="black", label=p) for p, c in PHASE_COLORS.items()]
    fig.legend(handles=handles, loc="upper right", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        f"{title} — pipeline stages" if title else "pipeline stages", x=0.01, ha="left", fontsize=10
    )
    _caption(fig, caption)
    fig.tight_layout(rect=(0, foot / height, 1, 1 - 0.45 / height))
    out = Path(path)
    fig.savefig(out)
    return out


CAPTION_CHARS_PER_INCH = 16  # characters of 8-point caption text an inch of width holds
CAPTION_LINE_IN = 0.16  # the height of a caption line, inches


def _wrapped(text: str, width_in: float) -> str:
    chars = int(width_in * CAPTION_CHARS_PER_INCH)
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n") if part)


def _caption_height(text: str, width_in: float) -> float:
    """Inches a caption takes under the panels (0 without one)."""
    if not text:
        return 0.0
    return 0.2 + CAPTION_LINE_IN * (_wrapped(text, width_in).count("\n") + 1)


def _caption(fig: Any, text: str) -> None:
    """`text` wrapped under the panels, from the figure's bottom-left corner up."""
    if text:
        width, height = fig.get_figwidth(), fig.get_figheight()
        top = _caption_height(text, width) - 0.1
        fig.text(
            0.01,
            top / height,
            _wrapped(text, width),
            ha="left",
            va="top",
            fontsize=8,
            color="#333333",
        )


def metric_bars(
    labels: Sequence[str],
    metrics: Mapping[str, Sequence[float | None]],
    path: str | Path,
    title: str = "",
    caption: str = METRICS_CAPTION,
) -> Path:
    """One horizontal bar chart per metric, the variants down a shared y axis, each bar's
    value written beside it; a variant with no value (failed) is marked instead of
    drawn. `caption` (under the charts) says what the numbers are."""
    n = len(labels)
    width = 3.2 * max(len(metrics), 1) + 1.5
    foot = _caption_height(caption, width)
    height = 1.4 + 0.35 * max(n, 1) + foot
    fig = _figure(width, height)
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
    _caption(fig, caption)
    fig.tight_layout(rect=(0, foot / height, 1, 1))
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
