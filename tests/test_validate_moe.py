"""The MoE and new-hardware figures of `validate` (sim/fidelity/frontier.py and the
expert-parallel replay in sim/fidelity/replay.py)."""

from __future__ import annotations

from typing import Any

import pytest

from sim.fidelity import frontier, replay, serving
from sim.fidelity.rows import NOT_REPRODUCIBLE, OK, Options
from sim.fidelity.validate import default_entries, validate
from sim.plan import load_scenario
from sim.plan.analyze import analyze
from sim.results.run import simulate

GROUPS = ("P4_moe", "P5_new_hardware")
QWEN_TRACE = "llmservingsim-rtxpro6000-qwen3-30b-a3b-instruct-2507.csv"


def _entry(prefix: str) -> dict[str, Any]:
    (entry,) = [e for e in default_entries() if str(e.get("id", "")).startswith(prefix)]
    return entry


def _scenarios(handler: Any, entry: dict[str, Any], opts: Options, monkeypatch: Any) -> list:
    """The scenarios a frontier handler simulates, captured on their way to `_rows`."""
    seen: list[dict[str, Any]] = []
    real = serving._rows

    def capture(setup: Any, scenario: dict[str, Any], figures: Any) -> list:
        seen.append(scenario)
        return real(setup, scenario, figures)

    monkeypatch.setattr(frontier, "_rows", capture)
    handler(entry, opts)
    return seen


def test_every_moe_and_new_hardware_entry_gives_a_number_or_a_precise_reason():
    rows = validate(groups=GROUPS, max_requests=200).rows
    entries = {e["id"] for e in default_entries() if e.get("group") in GROUPS}
    assert {r.id.split("/")[0] for r in rows} == entries
    for r in rows:
        assert r.status in (OK, NOT_REPRODUCIBLE), (r.id, r.note)
        if r.status == OK:
            assert r.simulated is not None and r.simulated > 0, r.id
        else:
            assert r.simulated is None
            assert "no model of this entry" not in r.note and "not modelled yet" not in r.note
    numbered = {r.id.split("/")[0] for r in rows if r.status == OK}
    assert {
        "sglang_deepseekv3_decode_ep72_9x8h100",
        "vllm062_llama31_405b_8xmi300x_sharegpt",
        "lss_vllm019_qwen3_30b_a3b_rtxpro6000_dp2_ep2_sharegpt300_sps10",
    } <= numbered
    unpriced = {r.id for r in rows if r.status == NOT_REPRODUCIBLE}
    assert unpriced == set(frontier.REASONS)
    # a disaggregated deployment with expert parallelism says that the pools refuse EP
    (dsk,) = [r for r in rows if r.id == "deepseek_v3r1_online_service_h800_per_node"]
    assert "disaggregated pools refuse expert parallelism" in dsk.note


def test_each_new_scenario_loads(monkeypatch):
    opts = Options(max_requests=20)
    ep72 = _scenarios(
        frontier.sglang_ep_decode, _entry("sglang_deepseekv3_decode_ep72"), opts, monkeypatch
    )
    mi300x = _scenarios(frontier.vllm_mi300x, _entry("vllm062_llama31_405b"), opts, monkeypatch)
    assert len(ep72) == 1 and len(mi300x) == 2
    s = load_scenario(ep72[0])
    assert (s.parallel.dp_attention, s.parallel.ep, s.parallel.experts.redundant) == (72, 72, 32)
    assert s.parallel.two_batch_overlap and s.parallel.stage_devices == 72
    assert [load_scenario(m).scheduler.policy for m in mi300x] == ["sarathi", "vllm"]
    trace = replay.load_shipped(replay.TRACES / QWEN_TRACE)
    q = load_scenario(replay.replay_scenario(trace, "q", Options()))
    assert (q.model.name, q.parallel.tp, q.parallel.dp_attention, q.parallel.ep) == (
        "qwen3-30b-a3b",
        1,
        2,
        2,
    )
    assert q.parallel.replicas == 1 and q.scheduler.params["max_num_seqs"] == 2 * 128


def test_qwen3_trace_replays_with_expert_parallelism():
    rows = validate(only="trace_llmservingsim-rtxpro6000-qwen3").rows
    assert rows and all(r.status == OK and r.group == "P1_trace_replay" for r in rows)
    assert "dp_attention2 x ep2" in rows[0].note


def test_mi300x_decode_step_is_no_faster_than_the_weight_read_floor(monkeypatch):
    """Every decode step of Llama-3.1-405B TP8 on MI300X reads at least each GPU's
    eighth of the weights from HBM: `llmsim analyze`'s batch-1 decode floor."""
    (scenario, _) = _scenarios(
        frontier.vllm_mi300x, _entry("vllm062_llama31_405b"), Options(max_requests=30), monkeypatch
    )
    floor = analyze("llama-3.1-405b", "mi300x-8x", tp=8, batch=1, dtype="bf16")
    it = simulate(load_scenario(scenario), records=True).iterations
    decode = it[(it["decode_seqs"] > 0) & (it["prefill_tokens"] == 0)]
    steps = ((decode["end_s"] - decode["start_s"]) / decode["iterations"]).to_numpy()
    assert len(steps) > 0
    assert steps.min() >= floor.decode_latency_floor_s
    assert floor.decode_latency_floor_s == pytest.approx(
        405.8e9 * 2 / 8 / 5.3e12, rel=0.1
    )  # 405.8B bf16 parameters over 8 GPUs at MI300X's 5.3 TB/s
