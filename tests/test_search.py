"""Capacity search: a system with a known answer, invariants of the window metrics,
determinism across worker processes, the confidence interval, and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli.main import main
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.results.run import simulate
from sim.studies.capacity import CapacityResult, _interval, capacity
from sim.studies.probes import Probe, RunMetrics, latency_curve, run_metrics

ROOT = Path(__file__).resolve().parent.parent
QUICK = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
QUICK.pop("output")


def fixed_service(rate: float, e2e_s: float | None = None, requests: int = 200) -> dict:
    """One replica, a fixed 512-token prompt and one output token: every request is one
    prefill of the same cost, so service time is a constant D; arrivals evenly spaced."""
    data = copy.deepcopy(QUICK)
    data["workload"] = {
        "requests": requests,
        "arrival": {"process": "constant", "rate": rate},
        "prompt": {"dist": "fixed", "value": 512},
        "output": {"dist": "fixed", "value": 1},
    }
    data["slo"] = {"e2e": e2e_s} if e2e_s is not None else {}
    return data


@pytest.fixture(scope="module")
def service_time_s() -> float:
    """D, measured by one run at a load where requests never overlap."""
    results = simulate(load_scenario(fixed_service(rate=1.0, requests=20)))
    e2e = (results.requests["finish_s"] - results.requests["arrival_s"]).to_numpy()
    assert np.allclose(e2e, e2e[0], rtol=1e-9)  # a fixed service time indeed
    return float(e2e[0])


def test_capacity_of_a_fixed_service_time_is_one_over_d(service_time_s):
    # Below 1/D each request finishes before the next arrives: e2e = D ≤ 1.5·D for all,
    # attainment exactly 1. Above 1/D request n waits n·(D − 1/r) more than the one
    # before it, so the window soon misses 1.5·D: the capacity is 1/D.
    d = service_time_s
    scenario = load_scenario(fixed_service(rate=10.0, e2e_s=1.5 * d))
    result = capacity(scenario, target=0.99, seeds=3, tolerance=0.02, loads=(0.5, 1.25))
    known = 1.0 / d
    assert result.converged and not result.note
    assert abs(result.capacity_rps - known) <= 0.02 * known
    assert result.capacity_rps <= known  # the highest rate that passed is below 1/D
    lo, hi = result.interval_rps
    assert hi is not None and lo <= known <= hi  # seeds agree: the bisection bracket
    assert (lo, hi) == result.bracket_rps
    assert hi / lo - 1 <= 0.02
    for p in result.probes:
        assert len(set(p.attainments)) == 1  # constant arrivals, fixed lengths: no noise
        if p.rate_rps < known:
            assert p.attainment == 1.0
        if p.rate_rps > 1.03 * known:
            assert p.attainment < 0.5
    assert [p.phase for p in result.probes[:3]] == ["bracket"] * 3  # 10 → 20 → 40
    assert result.goodput_rps == pytest.approx(result.capacity_rps, rel=0.02)
    assert result.usd_per_million_output_tokens is not None
    assert not result.warnings
    curve = result.curve
    assert list(curve["load"]) == [0.5, 1.25]
    assert curve["attainment"].tolist()[0] == 1.0
    assert curve["attainment"].tolist()[1] < 0.5
    assert curve["ttft_p99_s"].iloc[1] > curve["ttft_p99_s"].iloc[0]


def test_parallel_probes_give_the_same_result(service_time_s):
    scenario = load_scenario(fixed_service(rate=10.0, e2e_s=1.5 * service_time_s))
    kwargs = dict(seeds=2, tolerance=0.05, loads=(0.5, 1.0))
    one = capacity(scenario, jobs=1, **kwargs)
    two = capacity(scenario, jobs=2, **kwargs)
    assert one.to_dict()["probes"] == two.to_dict()["probes"]
    assert one.capacity_rps == two.capacity_rps
    assert one.curve.equals(two.curve)


def test_goodput_never_exceeds_throughput_and_attainment_falls_with_load():
    data = copy.deepcopy(QUICK)
    data["workload"]["requests"] = 150
    data["workload"]["output"] = {"dist": "lognormal", "median": 60, "sigma": 0.8, "max": 400}
    data["slo"] = {"ttft": "500 ms", "tpot": "40 ms"}  # vllm-v0 decodes at ~27 ms a step
    scenario = load_scenario(data)
    rates = [2.0, 8.0, 20.0, 60.0]
    for rate in rates[::3]:
        for seed in (0, 1, 2):
            s = load_scenario(data, [f"workload.arrival.rate={rate}", f"seed={seed}"])
            m = run_metrics(simulate(s, records=False), rate, 0.1, 0.1)
            assert 0.0 <= m.goodput_rps <= m.throughput_rps
            assert 0.0 <= m.attainment <= 1.0
    curve = latency_curve(scenario, rates, seeds=3)
    assert (curve["goodput_rps"] <= curve["throughput_rps"] + 1e-12).all()
    attainment = curve["attainment"].to_numpy()
    assert attainment[0] == pytest.approx(1.0)
    assert attainment[-1] < 0.5
    # Monotone within noise: never up by more than a few requests' worth.
    assert (np.diff(attainment) <= 0.02).all()
    assert curve["offered_rps"].tolist() == pytest.approx(rates)


def test_a_scenario_without_slo_is_an_error():
    data = fixed_service(rate=10.0)
    with pytest.raises(LlmsimError) as err:
        capacity(load_scenario(data))
    assert err.value.key == "slo"


def test_a_burst_has_no_rate_to_search():
    data = fixed_service(rate=10.0, e2e_s=1.0)
    data["workload"]["arrival"] = {"process": "burst"}
    with pytest.raises(LlmsimError, match="burst"):
        capacity(load_scenario(data))


def test_bad_options_name_their_key():
    scenario = load_scenario(fixed_service(rate=10.0, e2e_s=1.0))
    for kwargs, key in (
        ({"target": 1.5}, "target"),
        ({"seeds": 0}, "seeds"),
        ({"warmup": 0.6, "drain": 0.5}, "warmup"),
        ({"tolerance": 0.0}, "tolerance"),
    ):
        with pytest.raises(LlmsimError) as err:
            capacity(scenario, **kwargs)  # type: ignore[arg-type]
        assert err.value.key == key


def _probe(rate: float, attainments: list[float], target: float = 0.9) -> Probe:
    runs = tuple(
        RunMetrics(rate, i, 100, a, rate, rate * a, 0.0, None, None, None, None, 1, 1.0, 1.0, 0.0)
        for i, a in enumerate(attainments)
    )
    return Probe(rate, rate, runs, target, "bisect")


def test_interval_joins_the_bracket_and_the_seed_spread():
    # t(0.975, 2) = 4.30: 3 seeds with sd 0.05 give a margin of 0.124.
    sure_pass = _probe(8.0, [0.99, 0.99, 0.99])
    unsure_pass = _probe(9.0, [0.85, 0.95, 0.95])  # mean 0.917 ≥ 0.9, not by the margin
    unsure_fail = _probe(10.0, [0.80, 0.90, 0.90])  # mean 0.867 < 0.9
    sure_fail = _probe(12.0, [0.30, 0.31, 0.29])
    assert sure_pass.confident_pass and sure_fail.confident_fail
    assert unsure_pass.passed and not unsure_pass.confident_pass
    assert not unsure_fail.passed and not unsure_fail.confident_fail
    probes = [sure_pass, unsure_pass, unsure_fail, sure_fail]
    assert _interval(probes, unsure_pass, unsure_fail) == (8.0, 12.0)
    # Seeds that agree: the interval is the bisection bracket itself.
    a, b = _probe(9.0, [0.95] * 3), _probe(10.0, [0.5] * 3)
    assert _interval([a, b], a, b) == (9.0, 10.0)
    # Nothing confident above: the upper end is unknown.
    assert _interval([sure_pass, unsure_fail], sure_pass, unsure_fail) == (8.0, None)


def test_a_window_that_completes_far_less_than_it_is_offered_warns():
    starved = _probe(10.0, [0.99, 0.99, 0.99])
    starved = Probe(10.0, 10.0, tuple(_with_throughput(r, 6.0) for r in starved.runs), 0.9)
    result = CapacityResult(
        "x", 0.9, (0, 1, 2), 0.1, 0.1, 0.02, 1.0, 10.0, (9.0, 11.0), (10.0, 10.2), True, "",
        starved, (starved,), 1, 1.0,
    )  # fmt: skip
    assert result.warnings and "steady state" in result.warnings[0]


def _with_throughput(r: RunMetrics, rps: float) -> RunMetrics:
    from dataclasses import replace

    return replace(r, throughput_rps=rps)


def test_cli_capacity_prints_and_writes(tmp_path, capsys, service_time_s):
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump(fixed_service(rate=10.0, e2e_s=1.5 * service_time_s)))
    out = tmp_path / "cap"
    args = ["capacity", str(path), "--seeds", "1", "--loads", "0.5,1,1.2", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    shown = float(text.split("capacity of quickstart: ")[1].split(" req/s")[0])
    assert shown <= 1.0 / service_time_s and shown == pytest.approx(1.0 / service_time_s, rel=0.05)
    assert "95% interval" in text
    assert "probes (in order):" in text and "throughput–latency curve" in text
    assert (out / "curve.png").stat().st_size > 10_000
    assert (out / "scenario.resolved.yaml").exists()
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["capacity_rps"] == pytest.approx(1 / service_time_s, rel=0.02)
    assert len(doc["curve"]) == 3 and doc["probes"][0]["rate_rps"] == 10.0

    assert main([*args, "--json", "--set", "workload.requests=100"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [0]


def test_cli_capacity_bad_input_is_one_line(tmp_path, capsys):
    path = tmp_path / "noslo.yaml"
    path.write_text(yaml.safe_dump(fixed_service(rate=10.0)))
    assert main(["capacity", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "slo: capacity needs an SLO" in err
    assert main(["capacity", str(path), "--loads", "a,b"]) == 2
    assert "--loads" in capsys.readouterr().err


def test_cli_capacity_progress_on_draws_a_bar(tmp_path, capsys):
    path = tmp_path / "fixed.yaml"
    path.write_text(yaml.safe_dump(fixed_service(rate=10.0, e2e_s=0.1, requests=40)))
    args = ["capacity", str(path), "--seeds", "1", "--tolerance", "0.2", "--loads", "1"]
    assert main([*args, "--out", str(tmp_path / "cap"), "--progress", "on"]) == 0
    out = capsys.readouterr()
    assert "capacity of quickstart" in out.out
    # the search's length is not known in advance: the bar counts runs and names the phase
    assert "capacity: bisect" in out.err and "run" in out.err
    assert "capacity: curve" in out.err
    assert main([*args, "--out", str(tmp_path / "cap2"), "--progress", "off"]) == 0
    assert capsys.readouterr().err == ""
