"""Per-group errors and the leave-one-group-out figure.

The runtimes' free parameters (a runtime file's `fitted:` entries) are fitted once,
globally, on the dev measurements by bench/fit_runtimes.py, which also refits them once
per group with that group left out and predicts the group's rows at the refitted
values. It ships what it derived in `runtime_fit.json` (every fitted row's simulated
value at every grid point, the fitted point, each group's held-out point). Here a
report's rows are summarised per group, each with the error its rows have when their
group took no part in the fit: the held-out prediction for rows whose runtime has
fitted parameters, the row's own error for the rest (nothing fitted touches them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sim.fidelity.rows import Report, Row

FIT_TABLE = Path(__file__).resolve().parent / "runtime_fit.json"


@cache
def fit_table() -> dict[str, Any]:
    """The shipped fit (empty when it has not been run)."""
    return json.loads(FIT_TABLE.read_text()) if FIT_TABLE.is_file() else {}


def held_out_simulated(row: Row) -> float | None:
    """The row's simulated value with its group left out of the fit."""
    table = fit_table().get(row.runtime)
    if table is None or row.id not in table.get("held_out", {}):
        return row.simulated
    value = table["held_out"][row.id]
    return None if value is None or value != value else float(value)


@dataclass(frozen=True)
class GroupErrors:
    group: str
    rows: int
    median_pct: float | None
    p90_pct: float | None
    logo_median_pct: float | None
    logo_p90_pct: float | None


def _stats(errors: list[float]) -> tuple[float | None, float | None]:
    if not errors:
        return None, None
    a = np.abs(np.array(errors))
    return float(np.median(a)), float(np.percentile(a, 90))


def _logo_error(row: Row) -> float | None:
    sim = held_out_simulated(row)
    if sim is None or row.measured in (None, 0):
        return None
    assert row.measured is not None
    return (sim - row.measured) / row.measured * 100.0


def group_errors(report: Report) -> list[GroupErrors]:
    """One line per group, then `all`: median and p90 |error| as run, and held out."""
    out = []
    names = sorted({r.group for r in report.rows if r.error_pct is not None})
    for name in [*names, "all"]:
        rows = [r for r in report.rows if r.error_pct is not None and name in ("all", r.group)]
        errs = [e for r in rows if (e := r.error_pct) is not None]
        logo = [e for r in rows if (e := _logo_error(r)) is not None]
        out.append(GroupErrors(name or "(none)", len(rows), *_stats(errs), *_stats(logo)))
    return out
