"""A capacity holds over time: a run is judged unstable when its queue grows through the
window (whatever attainment the run measured), runs are long enough to judge, and the
capacity is never above the throughput of the same requests served all at once.

The system with a known answer is a single-server queue with a constant service time
D: one replica serving one request at a time (max_num_seqs 1), each a fixed 512-token
prompt and one output token, arrivals evenly spaced. Below 1/D every request is served
in D; above it the queue grows by rate·D − 1 requests per service time, for ever, and a
short run under a generous SLO still meets it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from sim.cli.main import main
from sim.plan import load_scenario
from sim.results.run import simulate
from sim.studies.capacity import capacity
from sim.studies.probes import (
    GROWTH_SDS,
    MIN_WINDOW_REQUESTS,
    Probe,
    all_at_once,
    occupancy,
    run_metrics,
    saturation,
)
from sim.workload.arrivals import generate
from tests.test_search import QUICK, fixed_service


def queue(rate: float, requests: int = 200, ttft_s: float | None = None, one: bool = True):
    """`fixed_service` served one request at a time (`one`), held to a TTFT SLO (with
    one output token, TTFT is the time in system)."""
    data = fixed_service(rate, requests=requests)
    if one:
        data["scheduler"]["max_num_seqs"] = 1
    if ttft_s is not None:
        data["slo"] = {"ttft": ttft_s}
    return data


@pytest.fixture(scope="module")
def d_s() -> float:
    """D, from a run where requests never overlap."""
    req = simulate(load_scenario(queue(rate=1.0, requests=20))).requests
    stay = (req["finish_s"] - req["arrival_s"]).to_numpy()
    assert np.allclose(stay, stay[0], rtol=1e-9)
    return float(stay[0])


def metrics(data: dict, rate: float, max_rps: float | None = None):
    return run_metrics(simulate(load_scenario(data), records=False), rate, 0.1, 0.1, max_rps)


@pytest.mark.parametrize(("load", "requests"), [(1.2, 200), (1.01, 500)])
def test_an_overloaded_queue_is_unstable_though_its_short_run_meets_the_slo(d_s, load, requests):
    # SLO 40·D: at 1.2/D the last request in the window waits 0.2 × 180 = 36 D, at 1.01/D
    # 0.01 × 450 = 4.5 D, so every request in the window meets it; run longer, none would.
    rate = load / d_s
    m = metrics(queue(rate, requests, ttft_s=40 * d_s), rate)
    assert m.attainment == 1.0  # what the search used to go by
    assert not m.stable and m.instability.startswith("queue grew")
    assert m.growth_sds > GROWTH_SDS
    assert m.sojourn_s is not None and m.backlog_s > m.sojourn_s
    probe = Probe(1.0, rate, (m,), 0.99)
    assert probe.attainments == (0.0,) and not probe.passed and probe.unstable_seeds == (0,)
    # Offered more than the maximum throughput: unstable on that count alone.
    above = metrics(queue(rate, requests, ttft_s=40 * d_s), rate, max_rps=1 / d_s)
    assert "above the maximum throughput" in above.instability


@pytest.mark.parametrize("load", [0.7, 0.99])
def test_a_queue_below_its_service_rate_is_stable(d_s, load):
    m = metrics(queue(load / d_s, ttft_s=1.5 * d_s), load / d_s, max_rps=1 / d_s)
    assert m.stable and m.instability == ""
    assert m.attainment == 1.0 and abs(m.growth_sds) < 0.05
    assert m.in_system == pytest.approx(load, rel=0.02)  # Little: λ·D
    assert m.window_sojourns > 20 and m.window_requests < MIN_WINDOW_REQUESTS  # 200 requests


def test_poisson_arrivals_below_the_service_rate_are_stable(d_s):
    # Random arrivals make the queue fluctuate; at 0.8/D none of five seeds' windows of
    # 500 requests shows growth beyond that.
    data = queue(0.8 / d_s, requests=625, ttft_s=40 * d_s)
    data["workload"]["arrival"]["process"] = "poisson"
    for seed in range(5):
        data["seed"] = seed
        m = metrics(data, 0.8 / d_s)
        assert m.stable, m.instability
        assert abs(m.growth_sds) < GROWTH_SDS / 2


def test_capacity_under_a_generous_slo_stays_below_the_service_rate(d_s):
    # TTFT ≤ 40·D passes any short run up to ~1.08/D. Only stability keeps the capacity
    # under 1/D, the rate past which the queue grows for ever.
    known = 1 / d_s
    scenario = load_scenario(queue(rate=10.0, ttft_s=40 * d_s))
    result = capacity(scenario, target=0.99, seeds=1, tolerance=0.02, loads=(1.0,))
    assert result.converged and not result.warnings
    assert 0.97 * known <= result.capacity_rps < known
    assert result.max_throughput_rps == pytest.approx(known, rel=1e-9)
    assert result.capacity_rps <= result.max_throughput_rps
    above = [p for p in result.probes if p.rate_rps > known]
    assert above and all(not p.passed and p.unstable_seeds for p in above)
    assert any(p.measured_attainments[0] >= 0.99 for p in above)  # passed as measured
    # Runs lengthened from the scenario's 200 requests to hold 400 in each window.
    assert result.size > 1 and result.requests_per_run == 625
    assert all(r.window_requests >= MIN_WINDOW_REQUESTS for p in result.probes for r in p.runs)
    assert result.curve["unstable"].tolist() == [0.0]


def test_capacity_is_at_most_the_throughput_of_the_same_requests_all_at_once(d_s):
    # Batched (up to 256 at once) two prefills take less than 2·D: the queue serves more
    # than 1/D, so the bound that counts is the deployment's own maximum throughput.
    data = queue(rate=10.0, ttft_s=40 * d_s, one=False)
    result = capacity(load_scenario(data), seeds=1, tolerance=0.02, loads=())
    burst = queue(rate=10.0, requests=int(result.requests_per_run or 0), one=False)
    burst["workload"]["arrival"] = {"process": "burst"}
    offline = simulate(load_scenario(burst), records=False).summary.throughput_rps
    assert offline is not None and result.max_throughput_rps is not None
    assert 1 / d_s < result.capacity_rps <= offline
    assert result.capacity_rps <= result.max_throughput_rps
    assert result.max_throughput_rps == pytest.approx(offline, rel=0.01)


def test_a_probe_passing_on_a_window_too_short_to_judge_runs_again_longer(d_s):
    # At 1.2/D under TTFT ≤ 200·D, 625 requests meet the SLO but the queue is 30 mean
    # stays deep: too short to judge. Run longer, the growth breaks the SLO.
    scenario = load_scenario(queue(rate=1.2 / d_s, ttft_s=200 * d_s))
    kwargs = dict(seeds=1, tolerance=0.1, loads=())
    one = capacity(scenario, jobs=1, **kwargs)  # type: ignore[arg-type]
    first = one.probes[0]
    assert first.rate_rps == pytest.approx(1.2 / d_s)
    assert first.mean("requests") > 1000 and first.measured_attainments[0] < 0.99
    assert not first.passed and first.unstable_seeds
    assert {p.size for p in one.probes} == {first.size}  # later probes keep the length
    assert one.capacity_rps < 1 / d_s
    two = capacity(scenario, jobs=2, **kwargs)  # type: ignore[arg-type]
    assert one.to_dict()["probes"] == two.to_dict()["probes"]
    assert one.capacity_rps == two.capacity_rps and one.size == two.size


def test_windows_too_short_to_judge_are_reported(tmp_path, capsys, monkeypatch, d_s):
    # Runs capped at the scenario's 100 requests: 80 in a window, too few to judge.
    monkeypatch.setattr("sim.studies.capacity.MAX_RUN_REQUESTS", 100)
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(queue(rate=10.0, requests=100, ttft_s=40 * d_s)))
    out = tmp_path / "cap"
    args = ["capacity", str(path), "--seeds", "1", "--tolerance", "0.1", "--loads", "1"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "note: at capacity a window lasts only" in text and "too short" in text
    assert "runs of 100 requests; maximum throughput" in text
    doc = json.loads((out / "capacity.json").read_text())
    assert any("too short" in w for w in doc["warnings"]) and doc["size"] == 1.0


def test_the_same_requests_all_at_once():
    scenario = load_scenario(QUICK, ["workload.requests=300"])
    wl = scenario.workload
    burst = all_at_once(scenario, wl)
    a, b = generate(wl, 3), generate(burst, 3)
    assert len(a) == len(b) == 300 and not b.arrival_s.any()
    assert (a.prompt_tokens == b.prompt_tokens).all() and (a.output_tokens == b.output_tokens).all()
    sat = saturation(scenario, 1.0, 0.1)
    assert sat.requests == 300 and sat.throughput_rps is not None and sat.in_service > 1


def test_occupancy_integrates_the_number_in_system():
    enter = np.array([0.0, 1.0, 1.5])
    leave = np.array([2.0, np.inf, 1.5])  # the third leaves as it arrives (rejected)
    (m1, v1), (m2, v2), (m3, v3) = occupancy(enter, leave, [0.0, 1.0, 2.0, 4.0])
    assert (m1, v1) == (1.0, 0.0) and (m2, v2) == (2.0, 0.0) and (m3, v3) == (1.0, 0.0)
    ((m, v),) = occupancy(enter, leave, [0.0, 2.0])
    assert m == 1.5 and v == pytest.approx(0.25)
