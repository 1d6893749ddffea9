"""The engine end to end: invariants over random scenarios, closed-form queueing, and
exactness of the leaps over quiet decode stretches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.plan import load_scenario
from sim.results.report import summary_json
from sim.results.run import simulate
from sim.results.slo import latency_columns
from tests.scenarios_for_tests import make

BASE = {
    "name": "t",
    "cluster": "dgx-a100",
    "model": "llama-2-7b",
    "parallel": {"tp": 1, "pp": 1, "replicas": 1},
    "scheduler": {"policy": "vllm"},
    "workload": {
        "requests": 300,
        "arrival": {"process": "poisson", "rate": 5.0},
        "prompt": {"dist": "uniform", "min": 16, "max": 1024},
        "output": {"dist": "uniform", "min": 1, "max": 256},
    },
}


def scenario(**changes):
    return make(BASE, **changes)


def check_invariants(res) -> None:
    req, it, dev = res.requests, res.iterations, res.devices
    # Every request completes or is rejected with a reason.
    assert set(req["status"]) <= {"finished", "rejected"}
    rejected = req[req["status"] == "rejected"]
    assert (rejected["reject_reason"].str.len() > 0).all()
    done = req[req["status"] == "finished"]
    # Output tokens generated = tokens requested.
    assert int(it["tokens_out"].sum()) == int(done["output_tokens"].sum())
    # Time never goes back: within a request, and iteration by iteration per engine.
    assert (done["scheduled_s"] >= done["arrival_s"] - 1e-12).all()
    assert (done["first_token_s"] > done["scheduled_s"]).all()
    assert (done["finish_s"] >= done["first_token_s"]).all()
    assert (it["end_s"] > it["start_s"]).all()
    for _, g in it.groupby(["replica", "engine"]):
        starts, ends = g["start_s"].to_numpy(), g["end_s"].to_numpy()
        assert (np.diff(starts) > 0).all()
        assert (starts[1:] >= ends[:-1] - 1e-9).all()
    # KV blocks in use never exceed capacity (the block manager would also raise).
    assert (it["kv_blocks_used"] <= it["kv_blocks_total"]).all()
    assert (
        dev["kv_bytes_peak"] + dev["weight_bytes"] + dev["workspace_bytes"] <= dev["memory_bytes"]
    ).all()
    # No device is busy more than 100% of the time.
    assert (dev["utilization"] <= 1 + 1e-9).all()


POLICY_PARAMS = {
    "vllm": [{}, {"max_num_seqs": 8}, {"preemption": "swap", "gpu_memory_utilization": 0.2}],
    "sarathi": [{"chunk_size": 256}, {"chunk_size": 512, "max_num_seqs": 16}],
    "orca": [{"reserve": "oracle"}, {"reserve": "pow2", "max_batch_size": 16}],
    "static": [
        {"batch_size": 4, "padding": "padded"},
        {"batch_size": 8, "padding": "packed", "max_wait": 0.05},
    ],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(sorted(POLICY_PARAMS)),
    variant=st.integers(0, 2),
    rate=st.floats(0.5, 40.0),
    seed=st.integers(0, 10_000),
    max_prompt=st.integers(8, 3000),
    max_output=st.integers(1, 600),
    replicas=st.integers(1, 3),
    router=st.sampled_from(["round-robin", "random", "least-outstanding", "least-kv"]),
    util=st.sampled_from([0.9, 0.25, 0.19]),
)
def test_invariants_over_random_scenarios(
    policy, variant, rate, seed, max_prompt, max_output, replicas, router, util
):
    params = POLICY_PARAMS[policy][variant % len(POLICY_PARAMS[policy])]
    params = {"gpu_memory_utilization": util, **params}
    s = scenario(
        seed=seed,
        scheduler={"policy": policy, **params},
        router={"policy": router},
        parallel={"tp": 1, "pp": 1, "replicas": replicas},
        workload__requests=120,
        workload__arrival={"process": "poisson", "rate": rate},
        workload__prompt={"dist": "uniform", "min": 1, "max": max_prompt},
        workload__output={"dist": "uniform", "min": 1, "max": max_output},
    )
    check_invariants(simulate(s))


def test_memory_pressure_preempts_and_still_conserves_tokens():
    s = scenario(
        scheduler={"policy": "vllm", "gpu_memory_utilization": 0.2},
        workload__arrival={"process": "burst"},
        workload__prompt={"dist": "fixed", "value": 1500},
        workload__output={"dist": "fixed", "value": 1500},
        workload__requests=60,
    )
    res = simulate(s)
    assert res.summary.preemptions > 0
    check_invariants(res)
    swap = simulate(
        s.model_copy(
            update={
                "scheduler": s.scheduler.model_copy(
                    update={"params": {**s.scheduler.params, "preemption": "swap"}}
                )
            }
        )
    )
    check_invariants(swap)


@pytest.mark.parametrize("policy", ["vllm", "sarathi", "orca", "static"])
def test_same_seed_same_summary_bit_for_bit(policy):
    s = scenario(scheduler={"policy": policy})
    a, b = simulate(s), simulate(s)
    assert summary_json(a.summary) == summary_json(b.summary)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    c = simulate(scenario(scheduler={"policy": policy}, seed=1))
    assert summary_json(c.summary) != summary_json(a.summary)


@pytest.mark.parametrize(
    "sched",
    [
        {"policy": "vllm"},
        {"policy": "vllm", "gpu_memory_utilization": 0.25},
        {"policy": "sarathi", "chunk_size": 256},
        {"policy": "orca", "reserve": "pow2"},
        {"policy": "static", "batch_size": 6, "padding": "padded"},
        {"policy": "static", "batch_size": 6, "padding": "packed"},
    ],
)
@pytest.mark.parametrize("model", ["llama-2-7b", "mistral-7b"])
def test_leaps_give_the_same_results_as_stepping(sched, model):
    """A leap over k quiet decode steps must equal k single steps."""
    s = scenario(scheduler=sched, model=model, workload__requests=150)
    leap = simulate(s)
    step = simulate(s.model_copy(update={"engine": s.engine.model_copy(update={"leap": False})}))
    assert leap.events < step.events
    cols = ["scheduled_s", "first_token_s", "finish_s"]
    np.testing.assert_allclose(leap.requests[cols], step.requests[cols], rtol=1e-9, atol=1e-9)
    assert (leap.requests["preemptions"] == step.requests["preemptions"]).all()
    assert leap.summary.iterations == step.summary.iterations
    assert leap.iterations["tokens_out"].sum() == step.iterations["tokens_out"].sum()
    for key in ("mfu", "mbu", "device_utilization"):
        assert leap.summary.metric(key) == pytest.approx(step.summary.metric(key), rel=1e-9)


def test_leaps_count_the_bytes_of_batch_sharded_attention_like_steps():
    """Attention split by batch (PaLM's multiquery layout): a leap reads each device's
    share of the KV cache, as the single steps do."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / "palm-540b-tpu-v4-layouts.yaml"
    s = load_scenario(path, ["workload.requests=8", "scheduler.batch_size=8"])
    assert s.parallel.attention == "batch"
    leap = simulate(s, records=False)
    step = simulate(
        s.model_copy(update={"engine": s.engine.model_copy(update={"leap": False})}),
        records=False,
    )
    assert leap.events < step.events
    assert leap.summary.mbu == pytest.approx(step.summary.mbu, rel=1e-9)


def test_each_replica_charges_its_own_tp_links():
    """Two TP-4 replicas on one DGX H100: each group's all-reduces occupy its own
    NVSwitch links (the replicas share one memoised cost, not their links)."""
    path = Path(__file__).resolve().parent.parent / "scenarios" / "llama-2-70b-dgx-h100-tp4x2.yaml"
    r = simulate(load_scenario(path, ["workload.requests=60"]))
    busy = dict(zip(r.links["link"], r.links["busy_s"], strict=True))
    comm = dict(zip(r.devices["device"], r.devices["comm_s"], strict=True))
    assert len(busy) == 16 and comm[0] != comm[4]
    for d in range(8):
        assert busy[f"dev{d}->nvsw0"] == busy[f"nvsw0->dev{d}"] == comm[d] > 0


def test_md1_mean_wait_matches_queueing_theory():
    """One replica, one request at a time, fixed prompt and one output token: a fixed
    service time D. Poisson arrivals at ρ = 0.7 give the M/D/1 mean wait
    Wq = ρ·D / (2(1 − ρ))."""
    base = scenario(
        scheduler={"policy": "vllm", "max_num_seqs": 1},
        workload__requests=10,
        workload__prompt={"dist": "fixed", "value": 512},
        workload__output={"dist": "fixed", "value": 1},
    )
    probe = simulate(base)
    service = float((probe.requests["finish_s"] - probe.requests["scheduled_s"]).iloc[0])
    rho = 0.7
    s = scenario(
        seed=3,
        scheduler={"policy": "vllm", "max_num_seqs": 1},
        workload__requests=40_000,
        workload__arrival={"process": "poisson", "rate": rho / service},
        workload__prompt={"dist": "fixed", "value": 512},
        workload__output={"dist": "fixed", "value": 1},
    )
    res = simulate(s)
    lat = latency_columns(res.requests)
    services = res.requests["finish_s"] - res.requests["scheduled_s"]
    assert services.max() == pytest.approx(service, rel=1e-12)
    assert services.min() == pytest.approx(service, rel=1e-12)
    expected = rho * service / (2 * (1 - rho))
    assert lat["queue_s"].mean() == pytest.approx(expected, rel=0.05)


def test_continuous_beats_static_on_the_same_load():
    kw = {"workload__requests": 200, "workload__arrival": {"process": "poisson", "rate": 8.0}}
    cont = simulate(scenario(scheduler={"policy": "vllm"}, **kw))
    padded = simulate(
        scenario(scheduler={"policy": "static", "batch_size": 16, "padding": "padded"}, **kw)
    )
    packed = simulate(
        scenario(scheduler={"policy": "static", "batch_size": 16, "padding": "packed"}, **kw)
    )
    assert cont.summary.e2e_s.mean < packed.summary.e2e_s.mean <= padded.summary.e2e_s.mean
    # Padding computes phantom tokens: more device work (hardware FLOPs, HFU) for the
    # same useful work (model FLOPs, MFU's numerator).
    assert padded.devices["flops"].sum() > 1.05 * packed.devices["flops"].sum()
    assert padded.devices["model_flops"].sum() == pytest.approx(
        packed.devices["model_flops"].sum(), rel=1e-9
    )
    assert padded.summary.mfu < padded.summary.hfu
    assert packed.summary.mfu == pytest.approx(packed.summary.hfu, rel=1e-9)


def test_tp_and_pp_replicas_run_and_use_links():
    s = scenario(
        model="llama-2-70b",
        cluster="dgx-h100",
        parallel={"tp": 4, "pp": 2, "replicas": 1},
        workload__requests=100,
    )
    res = simulate(s)
    check_invariants(res)
    assert len(res.devices) == 8
    assert set(res.devices["stage"]) == {0, 1}
    assert (res.links["busy_s"] > 0).any()
    tp8 = simulate(
        scenario(
            model="llama-2-70b", cluster="dgx-h100", parallel={"tp": 8}, workload__requests=100
        )
    )
    check_invariants(tp8)
    assert tp8.summary.tpot_s.p50 < res.summary.tpot_s.p50


def test_results_serialise(tmp_path):
    from sim.results.report import write_results

    res = simulate(scenario(workload__requests=50))
    out = write_results(res, tmp_path / "r", "csv")
    for name in (
        "summary.json",
        "scenario.resolved.yaml",
        "requests.csv",
        "iterations.csv",
        "devices.csv",
        "links.csv",
    ):
        assert (out / name).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == 50
    # The resolved scenario reproduces the run exactly.
    again = simulate(load_scenario(out / "scenario.resolved.yaml"))
    assert summary_json(again.summary) == summary_json(res.summary)
