"""Speculative decoding (sim.spec.speculative, sim.cost.stage.Speculation,
sim.plan.speculative): the spec's errors, the k + 1 bound and the acceptance-0 floor in
closed form, and the engine's invariants under speculation."""

from __future__ import annotations

import json

import pytest

import sim
from sim.arith.ops import Work
from sim.errors import LlmsimError
from sim.results.report import summary_json
from sim.results.run import simulate
from tests.scenarios_for_tests import make
from tests.test_engine import check_invariants

BASE = {
    "name": "spec",
    "cluster": "dgx-h100",
    "model": "llama-3.1-8b",
    "parallel": {"tp": 1},
    "scheduler": {"policy": "vllm", "max_num_seqs": 1},
    "workload": {
        "requests": 1,
        "arrival": {"process": "poisson", "rate": 1.0},
        "prompt": {"dist": "fixed", "value": 300},
        "output": {"dist": "fixed", "value": 40},
    },
}
EAGLE = {"method": "eagle", "k": 4, "acceptance": 0.7}
DRAFT = {"method": "draft", "k": 3, "acceptance": 0.7, "draft_model": "llama-3.1-8b"}
METHODS = {
    "eagle": EAGLE,
    "mtp": {**EAGLE, "method": "mtp"},
    "ngram": {**EAGLE, "method": "ngram"},
    "draft": DRAFT,
}


def scenario(**changes):
    return make(BASE, **changes)


def tpot(res) -> float:
    return float(res.summary.tpot_s.mean)


# ------------------------------------------------------------------ the spec


@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"method": "medusa", "acceptance": 0.5}, "speculative.method", "draft, eagle, mtp, ngram"),
        ({"method": "eagle", "k": 3, "acceptance": [0.9, 0.8]}, "speculative", "k=3"),
        ({"method": "eagle", "acceptance": 1.5}, "speculative.acceptance", "[0, 1]"),
        ({"method": "draft", "acceptance": 0.5}, "speculative", "needs draft_model"),
        ({**EAGLE, "draft_model": "llama-3.1-8b"}, "speculative", "takes no draft_model"),
        ({**DRAFT, "draft_model": "gpt3-125m"}, "speculative.draft_model", "tokenizer"),
        ({**DRAFT, "draft_model": "no-such-model"}, "speculative.draft_model", "no-such-model"),
    ],
)
def test_a_bad_speculative_key_is_one_line_naming_it(spec, key, words):
    with pytest.raises(LlmsimError) as err:
        scenario(speculative=spec)
    assert err.value.key is not None and err.value.key.startswith(key)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"parallel": {"tp": 1, "pp": 2}}, "one pipeline stage"),
        ({"scheduler": {"policy": "orca"}}, "max_num_seqs"),
        ({"offload": {"weights": [1, 0, 0]}}, "offloading"),
    ],
)
def test_speculation_outside_one_colocated_paged_stage_is_an_error(changes, words):
    with pytest.raises(LlmsimError, match=words) as err:
        scenario(speculative=EAGLE, **changes)
    assert err.value.key == "speculative"


def test_expected_tokens_is_one_plus_the_sum_of_the_acceptance_products():
    s = scenario(speculative={"method": "ngram", "k": 4, "acceptance": 0.6})
    assert s.speculative.expected_tokens == pytest.approx(1 + 0.6 + 0.36 + 0.216 + 0.1296)
    s = scenario(speculative={"method": "ngram", "k": 3, "acceptance": [0.9, 0.5, 0.0]})
    assert s.speculative.rates == (0.9, 0.5, 0.0)
    assert s.speculative.expected_tokens == pytest.approx(1 + 0.9 + 0.45)


def test_the_resolved_scenario_inlines_the_draft_model():
    s = scenario(speculative=DRAFT)
    data = s.resolved_dict()["speculative"]
    assert data["draft_model"]["name"] == "llama-3.1-8b"
    assert sim.load_scenario(s.resolved_dict()).speculative == s.speculative


# ------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("batch", [1, 8])
def test_acceptance_zero_is_never_faster_than_plain_decoding(method, batch):
    changes = {
        "scheduler__max_num_seqs": batch,
        "workload__requests": batch,
        "workload__arrival": {"process": "poisson", "rate": 1000.0},
    }
    plain = simulate(scenario(**changes))
    spec = simulate(scenario(speculative={**METHODS[method], "acceptance": 0.0}, **changes))
    assert spec.summary.acceptance_length == 1.0
    assert tpot(spec) >= tpot(plain)
    assert spec.summary.output_tokens_per_s <= plain.summary.output_tokens_per_s


@pytest.mark.parametrize("method", sorted(METHODS))
def test_acceptance_one_reaches_the_k_plus_1_bound_in_closed_form(method):
    """One request: after its first token, decode step j reads P + j tokens of KV and
    yields k + 1 tokens per round, so TPOT = Σ_j (draft_j + verify_j) / (k+1) / (N−1)."""
    spec = {**METHODS[method], "acceptance": 1.0}
    s = scenario(speculative=spec)
    res = simulate(s)
    k = s.speculative.k
    assert res.summary.acceptance_length == k + 1
    cost = sim.deploy(s).replicas[0].stages[0].cost
    plan = cost.speculation
    prompt, output = 300, 40
    rounds = []
    for j in range(output - 1):
        work = Work(tokens=1, decode_seqs=1, decode_kv_tokens=prompt + j)
        verify = cost.plain_time(plan.verify_work(work), k + 1)
        draft = (
            0.0
            if plan.draft is None
            else sum(plan.draft.time(w, 1) for w in plan.proposal_works(work))
        )
        rounds.append(draft + verify)
    assert tpot(res) == pytest.approx(sum(rounds) / (k + 1) / (output - 1), rel=1e-9)
    # and a round's verification is one (k+1)-token pass: 5 query tokens, logits for each
    first = plan.verify_work(Work(tokens=1, decode_seqs=1, decode_kv_tokens=prompt))
    assert (first.tokens, first.prefill_kv_tokens) == (k + 1, prompt + k + 1)


def test_the_draft_model_counts_against_device_memory():
    plain = sim.deploy(scenario()).replicas[0].memory
    draft = sim.deploy(scenario(speculative=DRAFT)).replicas[0].memory
    head = sim.deploy(scenario(speculative=EAGLE)).replicas[0].memory
    ngram = sim.deploy(scenario(speculative=METHODS["ngram"])).replicas[0].memory
    # an 8B draft of an 8B target: twice the weights and twice the KV per token
    assert draft.weight_bytes[0] == pytest.approx(2 * plain.weight_bytes[0], rel=0.01)
    assert draft.block_bytes == pytest.approx(2 * plain.block_bytes)
    assert plain.weight_bytes[0] < head.weight_bytes[0] < draft.weight_bytes[0]
    # n-gram keeps nothing, but every sequence's k lookahead slots are set aside
    assert ngram.weight_bytes == plain.weight_bytes
    assert ngram.blocks == plain.blocks - 1 * 1  # max_num_seqs 1 × ceil(4 / 16)
    assert draft.blocks < head.blocks < ngram.blocks


# ------------------------------------------------------------------ the engine


LOADED = {
    "workload__requests": 150,
    "workload__arrival": {"process": "poisson", "rate": 40.0},
    "workload__prompt": {"dist": "uniform", "min": 1, "max": 2000},
    "workload__output": {"dist": "uniform", "min": 1, "max": 300},
}


@pytest.mark.parametrize(
    "scheduler",
    [
        {"policy": "vllm", "max_num_seqs": 32},
        {"policy": "sarathi", "chunk_size": 256, "max_num_seqs": 16},
        {"policy": "vllm", "max_num_seqs": 64, "gpu_memory_utilization": 0.6},
    ],
)
@pytest.mark.parametrize("method", ["draft", "eagle"])
def test_tokens_are_conserved_and_kv_never_over_allocated_under_speculation(scheduler, method):
    res = simulate(scenario(speculative=METHODS[method], scheduler=scheduler, **LOADED))
    check_invariants(res)
    it = res.iterations
    assert (it["kv_blocks_used"] <= it["kv_blocks_total"]).all()


def test_memory_pressure_preempts_and_still_conserves_tokens_under_speculation():
    res = simulate(
        scenario(
            speculative=DRAFT,
            scheduler={
                "policy": "vllm",
                "max_num_seqs": 128,
                "max_model_len": 4096,
                "gpu_memory_utilization": 0.4,
            },
            **{**LOADED, "workload__arrival": {"process": "poisson", "rate": 200.0}},
        )
    )
    assert res.summary.preemptions > 0
    check_invariants(res)


def test_same_seed_same_results_and_leaping_changes_nothing():
    s = scenario(speculative=EAGLE, scheduler={"policy": "vllm", "max_num_seqs": 8}, **LOADED)
    a = json.loads(summary_json(simulate(s).summary))
    b = json.loads(summary_json(simulate(s).summary))
    assert a == b
    stepped = scenario(
        speculative=EAGLE,
        scheduler={"policy": "vllm", "max_num_seqs": 8},
        engine={"leap": False},
        **LOADED,
    )
    assert json.loads(summary_json(simulate(stepped).summary)) == a


def test_speculation_helps_one_sequence_and_its_summary_reports_the_acceptance_length():
    plain = simulate(scenario())
    spec = simulate(scenario(speculative=EAGLE))
    assert tpot(spec) < tpot(plain)
    assert spec.summary.metric("acceptance_length") == pytest.approx(
        1 + 0.7 + 0.49 + 0.343 + 0.2401
    )
    assert plain.summary.metric("acceptance_length") is None
    assert "acceptance_length" not in plain.summary.to_dict()
