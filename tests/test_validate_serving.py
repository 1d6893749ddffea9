"""Serving under load in `llmsim validate` (sim/fidelity/serving.py, replay.py): each
handler builds the scenario its docstring claims, rows carry group and runtime, a
trace replay reproduces the shipped arrivals and lengths exactly, and the shipped
traces are what bench/derive_serving_traces.py derives from ../shared."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sim.fidelity import replay, serving
from sim.fidelity.rows import OK, Options, device_name
from sim.fidelity.validate import _HANDLERS, default_data_path, load_measurements, validate
from sim.plan import load_scenario
from sim.results.run import simulate
from sim.workload.arrivals import generate

ROOT = Path(__file__).resolve().parent.parent
SHARED_TRACES = ROOT.parent / "shared" / "data" / "serving-traces" / "llmservingsim"
QUICK = Options(max_requests=40)  # few requests: these tests check setups, not figures
ENTRIES = {e["id"]: e for e in load_measurements(default_data_path()) if isinstance(e, dict)}
RTX4090 = "llmservingsim-rtx4090-llama-3.1-8b.csv"


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The scenario mappings the serving handlers load, in order."""
    seen: list[dict[str, Any]] = []

    def spy(scenario: dict[str, Any]) -> Any:
        seen.append(scenario)
        return load_scenario(scenario)

    monkeypatch.setattr(serving, "load_scenario", spy)
    monkeypatch.setattr(replay, "load_scenario", spy)
    return seen


def entry(prefix: str) -> dict[str, Any]:
    (found,) = [e for i, e in ENTRIES.items() if i.startswith(prefix)]
    return found


# ------------------------------------------------------------------------ the setups


def test_every_serving_load_entry_has_a_handler():
    ids = [i for i, e in ENTRIES.items() if e.get("group") == "P1_serving_load"]
    assert len(ids) == 19
    for i in ids:
        assert any(p.search(i) for p, _ in _HANDLERS), i


def test_infsim_is_vllm_v1_chunked_prefill_at_a_constant_rate(built):
    e = entry("infsim_vllm_llama_2_70b_h100_tp4_codegen")
    rows = serving.infsim(e, QUICK)
    (s,) = built
    assert (s["model"], s["cluster"], s["parallel"]["tp"]) == ("llama-2-70b", "dgx-h100", 4)
    assert s["scheduler"] == {
        "policy": "sarathi",
        "max_num_seqs": 128,
        "chunk_size": 2048,
        "max_model_len": 4096,
    }
    assert s["workload"]["arrival"] == {"process": "constant", "rate": 10.0}
    assert s["workload"]["prompt"] == {"dist": "uniform", "min": 577, "max": 609}
    assert s["workload"]["output"] == {"dist": "fixed", "value": 247}
    assert s["runtime"] == "vllm-v1" and s["precision"]["kv"] == "fp16"
    assert [r.metric for r in rows][:4] == ["TTFT mean", "TTFT p50", "TTFT p90", "TTFT p99"]
    assert all(r.unit == "ms" and r.status == OK and r.runtime == "vllm-v1" for r in rows)
    assert rows[0].measured == 56.68 and "40 requests (of 6000" in rows[0].note


def test_the_runtime_fit_reaches_the_scenario_through_opts(built):
    patch = {"host": {"fixed": "1 ms"}}
    opts = Options(max_requests=20, runtimes={"vllm-v1": patch})
    rows = serving.infsim(entry("infsim_vllm_llama_2_7b_h100_tp1_general"), opts)
    assert built[0]["runtime"] == {"base": "vllm-v1", **patch}
    assert {r.runtime for r in rows} == {"vllm-v1"}


def test_mixtral_runs_through_the_same_handler(built):
    rows = serving.infsim(entry("infsim_vllm_mixtral_8x7b_h100_tp2_codegen"), QUICK)
    assert built[0]["model"] == "mixtral-8x7b" and built[0]["parallel"]["tp"] == 2
    assert all(r.simulated is not None for r in rows)


def test_datacrunch_is_sglang_prefill_first_with_its_memory_fraction(built):
    rows = serving.datacrunch(
        entry("datacrunch_sglang_llama31_405b_h200_tp8_random1024_rps1"), QUICK
    )
    (s,) = built
    assert (s["model"], s["cluster"], s["parallel"]["tp"]) == ("llama-3.1-405b", "hgx-h200", 8)
    sched = s["scheduler"]
    assert sched["policy"] == "vllm" and sched["max_num_batched_tokens"] == 8192
    assert sched["gpu_memory_utilization"] == 0.87  # the run's --mem-frac
    assert sched["block_size"] == 1
    assert s["workload"]["arrival"] == {"process": "poisson", "rate": 1.0}
    assert s["workload"]["prompt"] == {"dist": "uniform", "min": 1, "max": 1024}
    assert s["runtime"] == "sglang"
    metrics = [r.metric for r in rows]
    assert metrics == ["median TTFT", "median ITL", "mean E2E", "median E2E", "output throughput"]
    assert rows[-1].unit == "tok/s" and rows[0].unit == "ms"


def test_llama_3_3_runs_as_llama_3_1_and_tp4_takes_sglang_default_fraction(built):
    serving.datacrunch(entry("datacrunch_sglang_llama33_70b_h200_tp4_random1024_rps2"), QUICK)
    assert built[0]["model"] == "llama-3.1-70b"
    assert built[0]["scheduler"]["gpu_memory_utilization"] == 0.85


def test_sharegpt_runs_have_one_setup_per_rate_with_fitted_lengths(built):
    rows = serving.sglang030(entry("sglang030_llama31_8b_a100"), QUICK)
    assert [s["workload"]["arrival"]["rate"] for s in built] == [4.0, 8.0]
    assert {r.id.rsplit("/", 1)[1] for r in rows} == {"rps4", "rps8"}
    assert (
        built[0]["cluster"] == "dgx-a100"
        and built[0]["scheduler"]["gpu_memory_utilization"] == 0.88
    )
    prompt = built[1]["workload"]["prompt"]
    assert prompt["dist"] == "lognormal" and (prompt["min"], prompt["max"]) == (4, 1024)
    assert "2400-prompt sample" in rows[-1].note


def test_the_sharegpt_fit_is_the_recipes_fit():
    from bench.derive_traces import median_for_mean

    for mean, (lo, hi) in ((224.2, serving.SHAREGPT_PROMPT), (189.1, serving.SHAREGPT_OUTPUT)):
        ours = serving.lognormal_median_for_mean(mean, 1.0, lo, hi)
        assert math.isclose(ours, median_for_mean(mean, 1.0, lo, hi), rel_tol=1e-9)


def test_offline_benchmark_runs_both_engines_as_bursts(built):
    rows = serving.sglang030_offline(entry("sglang030_vllm060"), QUICK)
    assert [s["runtime"] for s in built] == ["sglang", "vllm-v0"]
    assert all(s["workload"]["arrival"] == {"process": "burst"} for s in built)
    assert built[1]["scheduler"] == {"policy": "vllm", "max_num_seqs": 256, "max_model_len": 4096}
    assert [r.runtime for r in rows] == ["sglang", "sglang", "vllm-v0", "vllm-v0"]
    assert {r.unit for r in rows} == {"req/s", "tok/s"}


def test_closed_loop_is_a_queue_behind_max_num_seqs(built):
    rows = serving.vllm_concurrency(entry("vllm0191_llama31_8b_h100_conc8"), QUICK)
    bf16, fp8 = built
    assert bf16["scheduler"] == {"policy": "sarathi", "max_num_seqs": 8, "chunk_size": 8192}
    assert (bf16["precision"]["kv"], fp8["precision"]["kv"]) == ("bf16", "fp8")
    assert bf16["workload"]["arrival"] == {"process": "burst"}
    assert bf16["workload"]["prompt"] == {"dist": "uniform", "min": 17000, "max": 23000}
    assert bf16["workload"]["output"] == {"dist": "uniform", "min": 1700, "max": 2300}
    assert [r.unit for r in rows[:4]] == ["ms", "ms", "s", "tok/s"]
    assert "no closed-loop arrivals" in rows[0].note


def test_device_names_of_the_serving_entries():
    assert device_name(entry("lss_vllm019_llama31_8b_rtx4090")["hardware"]) == "rtx-4090"
    assert device_name(entry("lss_vllm019_llama31_8b_rtxpro6000")["hardware"]) == (
        "rtx-pro-6000-server"
    )
    assert device_name("nvidia_a100_80gb") == "a100-80gb-sxm"


def test_itl_median_weights_steps_by_tokens_and_leaps():
    it = pd.DataFrame(
        {
            "start_s": [0.0, 1.0, 2.0, 3.0],
            "end_s": [1.0, 1.01, 3.0, 3.02],
            "iterations": [1, 1, 1, 2],  # the last row is a leap of two 10 ms steps
            "decode_seqs": [1, 10, 0, 2],  # the 1 s step is a prefill-only one
        }
    )
    assert serving.itl_median_s(SimpleNamespace(iterations=it)) == pytest.approx(0.01)
    heavy = it.assign(decode_seqs=[30, 10, 0, 2])
    assert serving.itl_median_s(SimpleNamespace(iterations=heavy)) == pytest.approx(1.0)


# ----------------------------------------------------------------- groups and runtimes


def test_rows_carry_group_and_runtime():
    rows = validate(only="infsim_vllm_llama_2_7b_h100_tp1_codegen", max_requests=40).rows
    assert rows and {(r.group, r.runtime) for r in rows} == {("P1_serving_load", "vllm-v1")}
    rows = validate(only="lss_vllm019_llama31_8b_rtx4090").rows
    assert {(r.group, r.runtime) for r in rows} == {("P1_serving_load", "vllm-v1")}


def test_trace_entries_join_the_shipped_measurements_in_their_own_group():
    rows = validate(groups=("P1_trace_replay",)).rows
    by_id: dict[str, list] = {}
    for r in rows:  # a row id is the entry's, with /<metric> where an entry has several
        by_id.setdefault(r.id.split("/")[0], []).append(r)
    assert set(by_id) == {f"trace_{p.stem}" for p in replay.TRACES.glob("*.csv")}
    assert all(r.group == "P1_trace_replay" and r.runtime == "vllm-v1" for r in rows)
    # vLLM's DP x expert-parallel run replays with attention ranks and ep
    qwen = by_id["trace_llmservingsim-rtxpro6000-qwen3-30b-a3b-instruct-2507"]
    assert len(qwen) > 1 and all(r.status == OK for r in qwen)
    assert "dp_attention2 x ep2" in qwen[0].note
    rtx = by_id[f"trace_{Path(RTX4090).stem}"]
    assert [r.metric for r in rtx][:4] == ["TTFT p10", "TTFT p50", "TTFT p90", "TTFT p99"]
    ks = [r for r in rtx if r.unit == "KS D"]
    assert len(ks) == 2 and all(r.measured == 0.0 and r.error_pct is None for r in ks)
    assert all(0.0 <= r.simulated <= 1.0 and r.status == OK for r in ks)
    (kv,) = [r for r in rtx if r.metric == "KV cache capacity"]
    assert kv.measured == 2588 * 16


# ---------------------------------------------------------------------- trace replay


def test_replay_reproduces_the_shipped_arrivals_and_lengths():
    trace = replay.load_shipped(replay.TRACES / RTX4090)
    scenario = load_scenario(replay.replay_scenario(trace, "t", Options()))
    assert scenario.scheduler.policy == "sarathi"
    params = scenario.scheduler.policy_params()
    assert (params.max_num_seqs, params.token_budget, params.block_size) == (256, 2048, 16)
    assert params.max_model_len == 32768 and scenario.runtime.name == "vllm-v1"
    arrivals = generate(scenario.workload, scenario.seed, scenario.base_dir)
    np.testing.assert_array_equal(arrivals.arrival_s, trace.arrival_s)
    np.testing.assert_array_equal(arrivals.prompt_tokens, trace.prompt_tokens)
    np.testing.assert_array_equal(arrivals.output_tokens, trace.output_tokens)
    done = simulate(scenario, records=False).requests
    assert (done["status"] == "finished").all()
    assert done["prompt_tokens"].sum() == trace.prompt_tokens.sum()
    assert done["output_tokens"].sum() == trace.output_tokens.sum()


def test_shipped_traces_are_well_formed():
    for path in sorted(replay.TRACES.glob("*.csv")):
        trace = replay.load_shipped(path)
        assert len(trace.arrival_s) == trace.settings["num_requests"] == 300
        assert trace.arrival_s[0] == 0.0 and (np.diff(trace.arrival_s) >= 0).all()
        assert (trace.ttft_s > 0).all() and (trace.tpot_s > 0).all()
        assert path.read_text().startswith("# Per-request trace of vLLM 0.19.0")


def test_shipped_traces_are_what_the_derivation_gives():
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"the shared serving traces ({SHARED_TRACES}) are not beside this checkout")
    from bench import derive_serving_traces as derive

    runs = derive.runs(SHARED_TRACES)
    assert len(runs) == 3
    for run in runs:
        shipped = replay.TRACES / replay.trace_name(run.parent.name, run.name)
        assert shipped.read_text() == derive.derived(run), shipped.name
