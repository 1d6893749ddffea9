"""Text tables and numbers for the terminal, and JSON-safe values: the one formatter
every command's table goes through."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars plain numbers, keys strings,
    tuples lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def fmt_num(v: Any, fmt: str, scale: float = 1.0) -> str:
    """`v * scale` in format `fmt`, or "-" when there is no number (None or NaN)."""
    return "-" if v is None or v != v else format(v * scale, fmt)  # v != v: NaN


def aligned(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    left: Collection[int] = (),
    min_widths: Sequence[int] = (),
) -> list[str]:
    """The lines of a text table: each column as wide as its widest cell (and at least
    `min_widths`), right-justified (left-justified: the columns numbered in `left`),
    two spaces apart, no trailing spaces. A row shorter than the header ends in free
    text (a failure message, say): its last cell is printed as it is and sizes no
    column."""
    n = len(header)
    widths = list(min_widths) + [0] * (n - len(min_widths))
    for row in [header, *rows]:
        sized = row if len(row) == n else row[:-1]
        for i, cell in enumerate(sized):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [header, *rows]:
        cells = [
            c.ljust(widths[i]) if i in left else c.rjust(widths[i])
            for i, c in enumerate(row if len(row) == n else row[:-1])
        ]
        if len(row) != n:
            cells.append(row[-1])
        lines.append("  ".join(cells).rstrip())
    return lines
