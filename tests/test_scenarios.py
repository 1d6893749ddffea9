"""Every shipped scenario loads, runs, and reproduces its golden summary.

Goldens live in tests/golden/<scenario>.json. After an intended change of behaviour,
regenerate them with `pytest tests/test_scenarios.py --update-golden` and review the
diff: every changed number should be explained by the change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.plan import load_scenario
from sim.results.report import summary_json
from sim.results.run import simulate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"


def test_there_are_scenarios():
    names = {p.stem for p in SCENARIOS}
    assert {
        "quickstart",
        "bench-qwen2-7b-a30-conv",
        "azure-conv-trace-replay",
        "batching-static-padded",
        "batching-static-packed",
        "batching-continuous",
        "llama-2-70b-dgx-h100-tp8",
        "llama-2-70b-dgx-h100-tp4x2",
    } <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_loads_and_is_documented(path):
    text = path.read_text()
    assert text.startswith("#"), "a scenario opens with a comment saying what it shows"
    s = load_scenario(path)
    assert s.name == path.stem
    assert s.description


def _compare(actual, expected, where=""):
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for k in expected:
            _compare(actual[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _compare(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) and isinstance(actual, int | float):
        assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), (
            f"{where}: {actual} != golden {expected}"
        )
    else:
        assert actual == expected, f"{where}: {actual!r} != golden {expected!r}"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden_summary(path, update_golden):
    summary = json.loads(summary_json(simulate(load_scenario(path)).summary))
    golden = GOLDEN / f"{path.stem}.json"
    if update_golden or not golden.exists():
        golden.write_text(json.dumps(summary, indent=2) + "\n")
        if not update_golden:
            pytest.fail(f"no golden for {path.stem}; wrote one, review and commit it")
        return
    _compare(summary, json.loads(golden.read_text()), path.stem)
