"""The runtime fit is what it says (bench/fit_runtimes.py, docs/fidelity.md): the runtime
files hold the fitted point of the shipped table, that point and every held-out point
are the grid's minima of the stated objective, and the table still matches what the
code simulates."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from sim.fidelity.logo import fit_table
from sim.fidelity.validate import validate
from sim.spec.catalog import load_runtime

ROOT = Path(__file__).resolve().parents[1]
TABLE = fit_table()
FITTED = sorted(name for name, t in TABLE.items() if t.get("rows"))


def _fit_module():
    spec = importlib.util.spec_from_file_location(
        "fit_runtimes", ROOT / "bench" / "fit_runtimes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _get(rt, path: str) -> float:
    node = rt
    for part in path.split("."):
        node = getattr(
            node,
            {
                "fixed": "fixed_s",
                "per_sequence": "per_sequence_s",
                "per_token": "per_token_s",
                "kernel_launch": "kernel_launch_s",
            }.get(part, part),
        )
    return float(node)


def test_the_fit_covers_every_runtime_with_rows():
    assert FITTED, "bench/fit_runtimes.py has not been run"
    for name in FITTED:
        assert sorted(load_runtime(name).fitted) == TABLE[name]["params"]


@pytest.mark.parametrize("name", FITTED)
def test_runtime_files_hold_the_fitted_point(name):
    rt, t = load_runtime(name), TABLE[name]
    for path, value in zip(t["params"], t["fitted"], strict=True):
        assert math.isclose(_get(rt, path), value, rel_tol=1e-9, abs_tol=1e-12), path


@pytest.mark.parametrize("name", FITTED)
def test_fitted_and_held_out_points_are_the_grid_minima(name):
    fit = _fit_module()
    t = TABLE[name]
    rows = t["rows"]
    assert t["fitted_index"] == fit.best_point(t, set(rows))
    for group, point in t["logo_points"].items():
        rest = {i for i, r in rows.items() if r["group"] != group}
        k = fit.best_point(t, rest)
        assert t["points"][k] == point
        for i, r in rows.items():
            if r["group"] == group:
                held, expect = t["held_out"][i], r["simulated"][k]
                assert held == expect or (held != held and expect != expect)


def test_the_table_matches_what_the_code_simulates_now():
    """The ITL rows at the fitted point: a cheap entry whose runtime (vllm-v1) is fitted."""
    t = TABLE.get("vllm-v1")
    if t is None or not any(i.startswith("vllm0191_decode") for i in t["rows"]):
        pytest.skip("vllm-v1 has no ITL rows in the fit")
    report = validate(only="vllm0191_decode_itl")
    k = t["fitted_index"]
    for r in report.rows:
        if r.id in t["rows"] and r.simulated is not None:
            assert r.simulated == pytest.approx(t["rows"][r.id]["simulated"][k], rel=1e-9)
