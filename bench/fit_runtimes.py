"""Fit the runtimes' free parameters once, globally, on the dev measurements, and measure
how well the fit generalises by leaving each group of measurements out.

    python bench/fit_runtimes.py            # grid, fit, leave-one-group-out; writes the table
    python bench/fit_runtimes.py --write    # ... and the fitted values into runtimes/*.yaml

The procedure (docs/fidelity.md, "Fitted parameters"):
1. Every parameter a runtime file lists under `fitted:` has a grid of candidate values
   below (GRIDS; an overlapping runtime's host time is capped, OVERLAP_MAX). A runtime's
   parameters are fitted together, over the full grid of their combinations; runtimes
   are independent (no row runs under two runtimes).
2. For each grid point, `validate()` runs every dev entry whose rows ran under that
   runtime, with the candidate values laid over the runtime file
   (`validate(runtimes=...)`); capacity searches (DistServe's goodput) are left out of
   the grid, as too slow to repeat, and only checked afterwards.
3. The fitted point minimises the mean |log(simulated / measured)| over all those rows:
   one number per parameter, the same for every entry, never one per entry.
4. Leave one group out: for each group G, the point minimising the same objective over
   the rows not in G; G's rows are then predicted at that point. The figure reported is
   the median and p90 |error| of those held-out predictions over every row.
The grid, every row's simulated value at every grid point, the fit and the held-out
predictions are written to sim/fidelity/runtime_fit.json, which `llmsim validate
--logo` reads and a test checks against the runtime files.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.fidelity.validate import default_entries, validate  # noqa: E402
from sim.spec.catalog import load_runtime  # noqa: E402

OUT = ROOT / "sim" / "fidelity" / "runtime_fit.json"
SLOW = ("distserve_",)  # capacity searches: checked, not gridded

US = 1e-6
MS = 1e-3
GRIDS: dict[str, list[float]] = {
    "host.fixed": [0.0, 0.5 * MS, 1 * MS, 2 * MS, 4 * MS, 6 * MS, 8 * MS, 12 * MS, 16 * MS],
    "host.per_sequence": [0.0, 5 * US, 10 * US, 20 * US, 40 * US, 80 * US, 160 * US],
    "kernel_launch": [0.0, 4 * US, 8 * US, 12 * US, 16 * US, 24 * US, 32 * US, 48 * US],
}
# An engine that overlaps its host work with the GPU step hides it there: the engines'
# own profiles show no idle GPU between decode steps (SGLang v0.4 blog, Nsight trace of
# consecutive decode batches: "no single idle time on the GPU"; vLLM V1 blog: the CPU
# work hidden under a GPU step "as low as ~5ms" for Llama-8B on H100). A host time that
# would not hide under such a step is outside what these sources allow, so the grid of
# an overlapping runtime stops at 4 ms fixed and 40 us per sequence (10 ms at 256).
OVERLAP_MAX = {"host.fixed": 4 * MS, "host.per_sequence": 40 * US}


def grid(runtime: str, param: str) -> list[float]:
    """The candidate values of one parameter of one runtime."""
    cap = OVERLAP_MAX.get(param) if load_runtime(runtime).host.overlap else None
    return [v for v in GRIDS[param] if cap is None or v <= cap + 1e-12]


def format_seconds(value: float) -> str:
    """A duration as the runtime files write it (`250 us`, `4 ms`)."""
    if value < MS:
        return f"{value / US:g} us"
    return f"{value / MS:g} ms"


def patch_of(params: list[str], values: tuple[float, ...]) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for path, value in zip(params, values, strict=True):
        node = patch
        *heads, leaf = path.split(".")
        for h in heads:
            node = node.setdefault(h, {})
        node[leaf] = value
    return patch


def objective(measured: np.ndarray, simulated: np.ndarray) -> float:
    ok = (measured > 0) & (simulated > 0)
    if not ok.any():
        return math.inf
    return float(np.mean(np.abs(np.log(simulated[ok] / measured[ok]))))


def grid_table(runtime: str, params: list[str], base: Any) -> dict[str, Any]:
    ids = frozenset(
        r.id.split("/")[0]
        for r in base.rows
        if r.runtime == runtime and r.simulated is not None and not r.id.startswith(SLOW)
    )
    points = list(itertools.product(*(grid(runtime, p) for p in params)))
    rows: dict[str, dict[str, Any]] = {}
    if not ids:
        return {"params": params, "points": [list(p) for p in points], "rows": rows}
    cache = Path(f"/tmp/fit_runtimes-{runtime}.json")  # resume an interrupted grid
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    if done.get("points") != [list(p) for p in points] or done.get("ids") != sorted(ids):
        done = {"points": [list(p) for p in points], "ids": sorted(ids), "reports": {}}
    for i, values in enumerate(points):
        key = str(i)
        if key not in done["reports"]:
            report = validate(ids=ids, runtimes={runtime: patch_of(params, values)})
            done["reports"][key] = [
                [r.id, r.group, r.measured, r.simulated]
                for r in report.rows
                if r.runtime == runtime and r.measured  # KS distances (measured 0) aside
            ]
            cache.write_text(json.dumps(done))
        seen = set()
        for rid, group, measured, simulated in done["reports"][key]:
            if rid in seen:
                raise SystemExit(f"{runtime}: two rows named {rid}")
            seen.add(rid)
            entry = rows.setdefault(
                rid,
                {"group": group, "measured": measured, "simulated": [math.nan] * len(points)},
            )
            entry["simulated"][i] = simulated if simulated is not None else math.nan
        print(f"  {runtime} {i + 1}/{len(points)} {dict(zip(params, values, strict=True))}")
    return {"params": params, "points": [list(p) for p in points], "rows": rows}


def best_point(table: dict[str, Any], keep: set[str]) -> int:
    """The grid point that fits the rows `keep` best; with no rows to fit, the point
    where every parameter is 0 (the runtime as if nothing were fitted)."""
    ids = [i for i in table["rows"] if i in keep]
    if not ids:
        return next(k for k, p in enumerate(table["points"]) if not any(p))
    measured = np.array([table["rows"][i]["measured"] for i in ids])
    sims = np.array([table["rows"][i]["simulated"] for i in ids])  # rows x points
    scores = [
        objective(measured, np.nan_to_num(sims[:, k], nan=-1.0)) for k in range(sims.shape[1])
    ]
    return int(np.argmin(scores))


def fit(table: dict[str, Any]) -> dict[str, Any]:
    rows = table["rows"]
    everything = set(rows)
    fitted = best_point(table, everything)
    groups = sorted({r["group"] for r in rows.values()})
    held_out: dict[str, float] = {}
    logo_points: dict[str, list[float]] = {}
    for g in groups:
        rest = {i for i, r in rows.items() if r["group"] != g}
        k = best_point(table, rest)
        logo_points[g] = table["points"][k]
        for i, r in rows.items():
            if r["group"] == g:
                held_out[i] = r["simulated"][k]
    table["fitted"] = table["points"][fitted]
    table["fitted_index"] = fitted
    table["logo_points"] = logo_points
    table["held_out"] = held_out
    return table


def write_values(runtime: str, params: list[str], values: list[float]) -> None:
    path = ROOT / "runtimes" / f"{runtime}.yaml"
    text = path.read_text()
    for p, v in zip(params, values, strict=True):
        head, _, leaf = p.rpartition(".")
        shown = format_seconds(v)
        nested = rf"(^{head}:\n(?:  .*\n)*?  {leaf}: ).*$"
        pattern = nested if head else rf"(^{leaf}: ).*$"
        text, n = re.subn(pattern, rf"\g<1>{shown}", text, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"{path}: cannot find {p} to write")
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write fitted values to runtimes/")
    ap.add_argument("--only", help="fit only this runtime (others kept from the table)")
    args = ap.parse_args()
    previous = json.loads(OUT.read_text()) if OUT.is_file() else {}
    result: dict[str, Any] = dict(previous) if args.only else {}
    names = sorted(p.stem for p in (ROOT / "runtimes").glob("*.yaml"))
    # which rows run under which runtime (the slow capacity searches aside)
    quick = frozenset(
        e["id"]
        for e in default_entries()
        if isinstance(e, dict) and not str(e.get("id")).startswith(SLOW)
    )
    base = validate(ids=quick)
    for name in names:
        rt = load_runtime(name)
        params = sorted(rt.fitted)
        if not params or (args.only and name != args.only):
            continue
        missing = [p for p in params if p not in GRIDS]
        if missing:
            raise SystemExit(f"{name}: no grid for {missing}")
        table = grid_table(name, params, base)
        if not table["rows"]:
            print(f"{name}: no dev rows run under it; its file's values stay as they are")
            continue
        table = fit(table)
        result[name] = table
        shown = {p: format_seconds(v) for p, v in zip(params, table["fitted"], strict=True)}
        print(f"{name}: fitted {shown} over {len(table['rows'])} rows")
        if args.write:
            write_values(name, params, table["fitted"])
    OUT.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
