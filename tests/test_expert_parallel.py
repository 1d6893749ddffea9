"""Expert parallelism (sim.cost.experts, sim.plan.experts): the all-to-all against its
closed form, load imbalance, redundant experts, two-batch overlap, the links EP traffic
holds, and the errors of the parallel section."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import simpy

from sim.arith.ops import Work
from sim.cost.collectives import CollectiveModel
from sim.cost.experts import group_loads, imbalance, popularity
from sim.cost.topology import build_cluster
from sim.engine.resources import Links
from sim.errors import LlmsimError
from sim.plan.deploy import deploy
from sim.results.run import simulate
from sim.spec import catalog
from tests.scenarios_for_tests import make

BASE = {
    "name": "t",
    "cluster": "dgx-h100",
    "model": "mixtral-8x7b",
    "parallel": {"tp": 8, "pp": 1, "replicas": 1},
    "scheduler": {"policy": "vllm"},
    "engine": {"cost": "roofline"},
    "workload": {
        "requests": 40,
        "arrival": {"process": "poisson", "rate": 20.0},
        "prompt": {"dist": "uniform", "min": 64, "max": 1024},
        "output": {"dist": "uniform", "min": 1, "max": 64},
    },
}


def scenario(**changes):
    return make(BASE, **changes)


def cluster(name: str):
    return build_cluster(catalog.resolve_cluster(catalog.cluster_from_ref(name)))


# ------------------------------------------------------------------ the all-to-all


def test_all_to_all_on_one_nvswitch_is_its_closed_form():
    """8 GPUs on one NVSwitch: each port carries its 7 outgoing flows of S/8 bytes:
    launch + (α_out + α_in) + 7/8 · S / B."""
    c = cluster("dgx-h100")
    group = CollectiveModel(c, range(8))
    size = 64e6
    b = c.link("dev0", "nvsw0").bandwidth_bytes_per_s
    alpha = c.link("dev0", "nvsw0").latency_s + c.link("nvsw0", "dev1").latency_s
    expected = c.device.launch_overhead_s + alpha + 7 / 8 * size / b
    assert group.all_to_all_routed_s(size) == pytest.approx(expected, rel=1e-12)
    # the same on NVSwitch as the ring-bounded all-to-all the TP layouts use
    assert group.all_to_all_routed_s(size) == pytest.approx(group.all_to_all_s(size), rel=1e-12)
    assert set(group.all_to_all_links()) == {(f"dev{i}", "nvsw0") for i in range(8)} | {
        ("nvsw0", f"dev{i}") for i in range(8)
    }


def test_all_to_all_across_a_fat_tree_is_bound_by_the_nics():
    """16 GPUs on two DGX H100 nodes: each GPU's NIC carries its 8 flows to the other
    node (S/16 bytes each); NVLink carries the 7 inside the node, far faster. Time:
    launch + the longest route's latency + 8 · (S/16) / B_nic."""
    c = cluster("dgx-h100-x2")
    group = CollectiveModel(c, range(16))
    size = 64e6
    nic = c.link("dev0", "net")
    assert nic.bandwidth_bytes_per_s < c.link("dev0", "nvsw0").bandwidth_bytes_per_s / 8
    latency = c.route("dev0", "dev8").latency_s
    expected = c.device.launch_overhead_s + latency + 8 * (size / 16) / nic.bandwidth_bytes_per_s
    assert group.all_to_all_routed_s(size) == pytest.approx(expected, rel=1e-12)
    assert ("dev0", "net") in group.all_to_all_links()


# ------------------------------------------------------------------ load


def test_zipf_and_histogram_popularity():
    assert popularity(4) == (0.25,) * 4
    zipf = popularity(4, skew=1.0)
    h = 1 + 1 / 2 + 1 / 3 + 1 / 4
    assert zipf == pytest.approx((1 / h, 1 / 2 / h, 1 / 3 / h, 1 / 4 / h), rel=1e-12)
    assert popularity(3, histogram=(2, 1, 1)) == (0.5, 0.25, 0.25)


def test_redundant_experts_spread_the_hottest():
    """Expert 0 takes 5/12 of the tokens. On 4 groups in id order the first holds 6/12:
    max/mean 2. Four extra copies of expert 0 (EPLB) leave 12 copies of 1/12 each,
    three a group: balanced."""
    shares = popularity(8, histogram=(5, 1, 1, 1, 1, 1, 1, 1))
    assert imbalance(group_loads(shares, 4)) == pytest.approx(2.0, rel=1e-12)
    assert imbalance(group_loads(shares, 4, redundant=4)) == pytest.approx(1.0, rel=1e-12)


def test_a_uniform_histogram_prices_exactly_as_balanced():
    par = {"tp": 2, "dp_attention": 4, "ep": 4}
    even = deploy(scenario(parallel=par)).replicas[0].stages[0].cost
    uniform = {**par, "experts": {"histogram": [7] * 8}}
    same = deploy(scenario(parallel=uniform)).replicas[0].stages[0].cost
    assert same.experts is not None and same.experts.imbalance == 1.0
    for work in (Work.decode(64, 1000), Work.prefill(3, 777)):
        assert same.time(work, 1) == even.time(work, 1)


def test_a_skewed_histogram_slows_the_expert_compute_by_max_over_mean():
    """Histogram (5,1,...,1) on 4 expert groups: max/mean = 2. In a compute-bound
    prefill (8192 tokens: 4096 rows a group, every expert busy) the slowest group
    computes twice the rows, so its expert ops take twice as long (roofline, launches
    aside); the step grows by that and by the all-to-alls carrying twice the bytes."""
    par = {"tp": 2, "dp_attention": 4, "ep": 4}
    even = deploy(scenario(parallel=par)).replicas[0].stages[0].cost
    skew = {**par, "experts": {"histogram": [5, 1, 1, 1, 1, 1, 1, 1]}}
    hot = deploy(scenario(parallel=skew)).replicas[0].stages[0].cost
    assert hot.experts is not None and even.experts is not None
    assert hot.experts.imbalance == pytest.approx(2.0, rel=1e-12)
    tokens = 8192
    assert hot.experts.expert_rows(tokens) == 2 * even.experts.expert_rows(tokens) == 8192
    launch = even.kernel.device.launch_overhead_s

    def experts_s(cost):
        rows = Work(tokens=cost.experts.expert_rows(tokens))
        return sum(cost.kernel.op_time(op, rows) - launch for op in cost.experts.expert_ops)

    assert experts_s(hot) == pytest.approx(2 * experts_s(even), rel=1e-12)
    work = Work.prefill(8, 1024)
    layers = even.n_layers
    comm = hot.experts.layer_comm_s(tokens) - even.experts.layer_comm_s(tokens)
    grown = layers * (experts_s(hot) - experts_s(even) + comm)
    assert hot.time(work, 8) - even.time(work, 8) == pytest.approx(grown, rel=1e-9)


# ------------------------------------------------------------------ two-batch overlap


def test_two_batch_overlap_is_its_closed_form_and_shows_in_a_run():
    """Micro-batches A and B: c_A + L·max(c_B, m_A) + (L−1)·max(c_A, m_B) + m_B, where
    the sum would be L·(c + m); across two nodes (NIC-bound all-to-alls) a long prefill
    gains from it; in a run of short prompts (where each half re-reads the weights)
    it costs, and either way the run's figures change."""
    par = {"tp": 1, "dp_attention": 16, "ep": 8}
    base = {"cluster": "dgx-h100-x2", "parallel": par}
    plain = deploy(scenario(**base)).replicas[0].stages[0].cost
    s = scenario(**{**base, "parallel": {**par, "two_batch_overlap": True}})
    tbo = deploy(s).replicas[0].stages[0].cost
    work = Work.prefill(16, 1024)
    half = Work.prefill(8, 1024)
    c, m = tbo.layer_parts(half)
    n = tbo.n_layers
    extras = tbo.time(work, 0) - (c + n * max(c, m) + (n - 1) * max(c, m) + m)
    full_c, full_m = plain.layer_parts(work)
    assert plain.time(work, 0) == pytest.approx(n * (full_c + full_m) + extras, rel=1e-9)
    assert m > 0.25 * c  # NIC-bound: overlap hides a good share
    assert tbo.time(work, 0) < plain.time(work, 0)
    assert tbo.comm_part_s(work.tokens) == pytest.approx(2 * n * m, rel=1e-12)
    off = simulate(scenario(**base)).summary
    on = simulate(s).summary
    assert on.ttft_s.p50 is not None and off.ttft_s.p50 is not None
    assert on.ttft_s.p50 != off.ttft_s.p50


# ------------------------------------------------------------------ links held


def test_ep_all_to_alls_across_nodes_share_nics_with_pipeline_sends():
    """Mixtral EP over 16 GPUs a stage, PP 2 on four DGX H100 nodes: the all-to-alls
    of stage 0 cross every GPU's NIC, the send to stage 1 leaves through device 0's."""
    s = scenario(cluster="dgx-h100-x4", parallel={"tp": 1, "dp_attention": 16, "ep": 8, "pp": 2})
    (rep,) = deploy(s).replicas
    assert ("dev0", "net") in rep.stages[0].links
    assert set(rep.stages[0].shared) == set(rep.sends[0].edges) & set(rep.stages[0].links)
    assert ("dev0", "net") in rep.stages[0].shared
    # one node, nothing else on its ports: nothing to hold
    (alone,) = deploy(scenario(parallel={"tp": 1, "dp_attention": 8, "ep": 8})).replicas
    assert alone.stages[0].links and not alone.stages[0].shared


def test_two_all_to_alls_on_a_shared_nic_take_twice_as_long():
    """Both stages' collectives need the NIC they share: run at once, the second waits
    for the first, so the pair ends at twice one all-to-all's time."""
    s = scenario(cluster="dgx-h100-x4", parallel={"tp": 1, "dp_attention": 16, "ep": 8, "pp": 2})
    (rep,) = deploy(s).replicas
    stage = rep.stages[0]
    assert stage.cost.experts is not None
    one = stage.cost.experts.group.all_to_all_routed_s(64e6)
    env = simpy.Environment()
    links = Links(env)
    ends = []

    def a2a():
        yield from links.hold(stage.shared, one)
        ends.append(env.now)

    env.process(a2a())
    env.process(a2a())
    env.run()
    assert ends == [pytest.approx(one, rel=1e-12), pytest.approx(2 * one, rel=1e-12)]


def test_a_held_nic_delays_the_ep_collectives_by_the_overlap():
    """One prefill on the PP 2 EP deployment with stage 0's shared NIC held by another
    transfer past the end of its compute: the collectives wait, then run in full."""
    from sim.engine.records import Recorder
    from sim.engine.request import Req
    from sim.engine.run import build_replica

    s = scenario(cluster="dgx-h100-x4", parallel={"tp": 1, "dp_attention": 16, "ep": 8, "pp": 2})

    def end(hold_s: float) -> tuple[float, float]:
        d = deploy(s)
        env = simpy.Environment()
        links = Links(env)
        recorder = Recorder(1)
        rep = build_replica(d, env, d.replicas[0], recorder, links)
        stage = d.replicas[0].stages[0]
        work = Work.prefill(1, 512)
        compute = stage.cost.time(work, 0) - stage.cost.comm_part_s(work.tokens)
        if hold_s > 0:
            env.process(links.hold(stage.shared, hold_s))
        rep.start()
        rep.admit(Req(0, 0.0, 512, 1))
        rep.arrivals_done()
        env.run()
        return float(recorder.finish_s[0]), compute

    free, compute = end(0.0)
    held, _ = end(compute + 2e-3)
    assert held == pytest.approx(free + 2e-3, rel=1e-9)


# ------------------------------------------------------------------ ep = 1, errors


def test_ep_1_leaves_plain_tensor_parallelism_untouched():
    plain = deploy(scenario()).replicas[0].stages[0]
    same = deploy(scenario(parallel={"tp": 8, "ep": 1, "experts": {"skew": 1.5}}))
    stage = same.replicas[0].stages[0]
    assert stage.cost.experts is None and stage.links == plain.links
    for work in (Work.decode(32, 4000), Work.prefill(2, 900)):
        assert stage.cost.time(work, 1) == plain.cost.time(work, 1)


def test_memory_holds_the_local_experts_and_the_rank_kv():
    """EP 8 on 8 GPUs with attention over 8 ranks of one: each GPU keeps one whole
    expert (as TP 8 keeps an eighth of each), the whole attention, embedding and LM
    head of its rank, and its rank's KV only."""
    tp8 = deploy(scenario()).replicas[0].memory
    ep8 = deploy(scenario(parallel={"tp": 1, "dp_attention": 8, "ep": 8})).replicas[0].memory
    m = catalog.load_model("mixtral-8x7b")
    attn = m.d_model * (m.q_dim + 2 * m.kv_dim) + m.q_dim * m.d_model
    attn_tp8 = m.d_model * (m.q_dim // 8 + 2 * m.head_dim) + m.q_dim // 8 * m.d_model
    embedding = 2 * m.vocab_size * m.d_model * (1 - 1 / 8)  # untied, vocab-parallel
    more = (m.n_layers * (attn - attn_tp8) + embedding) * 2  # bf16
    assert ep8.weight_bytes[0] - tp8.weight_bytes[0] == pytest.approx(more, rel=1e-9)
    assert ep8.kv_bytes_per_token[0] == pytest.approx(tp8.kv_bytes_per_token[0], rel=1e-12)


@pytest.mark.parametrize(
    ("par", "model", "key", "words"),
    [
        ({"tp": 8, "ep": 3}, "mixtral-8x7b", "parallel.ep", "must divide tp × dp_attention"),
        (
            {"tp": 2, "dp_attention": 3, "ep": 6},
            "mixtral-8x7b",
            "parallel.ep",
            "does not divide the 8 experts",
        ),
        ({"tp": 8, "ep": 8}, "llama-2-7b", "parallel.ep", "is dense"),
        (
            {"tp": 8, "two_batch_overlap": True},
            "mixtral-8x7b",
            "parallel.two_batch_overlap",
            "ep > 1",
        ),
        ({"tp": 8, "dp_attention": 2, "ep": 8}, "mixtral-8x7b", "parallel", "16 devices"),
        (
            {"tp": 8, "ep": 8, "experts": {"histogram": [1, 2]}},
            "mixtral-8x7b",
            "parallel.experts.histogram",
            "2 counts for the 8 experts",
        ),
    ],
)
def test_bad_expert_parallelism_is_one_line_naming_the_key(par, model, key, words):
    with pytest.raises(LlmsimError) as err:
        scenario(model=model, parallel=par)
    assert err.value.key == key
    assert words in err.value.message and "\n" not in str(err.value)


def test_expert_rows_round_up_to_whole_rows():
    cost = deploy(scenario(parallel={"tp": 8, "ep": 8})).replicas[0].stages[0].cost
    assert cost.experts is not None
    assert cost.experts.expert_rows(1) == math.ceil(2 / 8) == 1
    assert cost.experts.expert_rows(100) == 25


# ------------------------------------------------------------------ the shipped scenario


@pytest.mark.parametrize(
    ("name", "tp", "dtype"),
    [("mixtral-8x7b-h100-tp-vs-ep", 8, "bf16"), ("deepseek-v3-h200-x2-tp-vs-dp-ep", 16, "fp8")],
)
def test_shipped_scenario_decodes_above_the_weight_read_floor(name, tp, dtype):
    """Each shipped EP scenario's golden (attention TP, experts EP over the same GPUs)
    against `analyze`'s decode floor for plain TP at 16 sequences (the seeds' closed
    forms at peak bandwidth): the experts 16 tokens touch are read either way, whole on
    their GPU under EP or in slivers on every GPU under TP, so each GPU reads the same
    share of the weights a step and no step beats that floor. Its memory holds at least
    its share of the parameters."""
    import json
    from pathlib import Path

    from sim.arith.params import total_params
    from sim.arith.precision import Precision
    from sim.plan import load_scenario
    from sim.plan.analyze import analyze

    root = Path(__file__).resolve().parent.parent
    s = load_scenario(root / "scenarios" / f"{name}.yaml")
    assert (s.parallel.tp, s.parallel.ep, s.parallel.pp) == (tp, tp, 1)
    g = json.loads((root / "tests" / "golden" / f"{name}.json").read_text())
    floor = analyze(s.model, s.cluster, tp=tp, pp=1, batch=16, prompt=256, output=2, dtype=dtype)
    assert g["tpot_s"]["p50"] >= floor.decode_latency_floor_s
    share = total_params(s.model) * Precision.of(s.precision).w_bytes / tp
    assert 0.95 * share <= g["memory_bytes_per_device_peak"] <= s.cluster.node.device.memory_bytes


def test_leaps_equal_stepping_under_expert_parallelism_and_overlap():
    """Quiet decode stretches run as one event price each step as stepping does, with
    attention ranks, expert groups and two-batch overlap."""
    for par in (
        {"tp": 2, "dp_attention": 4, "ep": 4},
        {"tp": 1, "dp_attention": 8, "ep": 8, "two_batch_overlap": True},
    ):
        s = scenario(parallel=par)
        leap = simulate(s)
        step = simulate(
            s.model_copy(update={"engine": s.engine.model_copy(update={"leap": False})})
        )
        assert leap.events < step.events
        assert leap.summary.tpot_s.p50 == pytest.approx(step.summary.tpot_s.p50, rel=1e-9)
        assert leap.summary.sim_time_s == pytest.approx(step.summary.sim_time_s, rel=1e-9)


def test_attention_ranks_over_tp_sharded_experts_gather_and_scatter():
    """ep = 1 with 4 attention ranks of TP 2: every expert is split over all 8 GPUs, so
    each needs every rank's tokens: an all-gather before the experts and a reduce-scatter
    after, over the 8 GPUs, beside each rank's attention all-reduce."""
    cost = deploy(scenario(parallel={"tp": 2, "dp_attention": 4})).replicas[0].stages[0].cost
    assert cost.experts is not None
    parts = cost.experts.layer_comm_breakdown(1024)
    assert set(parts) == {"attention_all_reduce", "all_gather", "reduce_scatter"}
    group = cost.experts.group
    assert parts["all_gather"] == group.all_gather_s(1024 * 4096 * 2)
    assert cost.experts.expert_rows(1024) == 2048


def test_one_long_prompt_runs_whole_on_one_attention_rank():
    """A sequence stays on one attention data-parallel rank: a lone 8k-token prompt
    under 8 ranks takes at least its own rank's dense ops and attention at their
    physical floor (before, the step's tokens were spread over the ranks and the first
    token came in under it)."""
    prompt = 8192
    wl = {
        "requests": 1,
        "arrival": {"process": "constant", "rate": 1.0},
        "prompt": {"dist": "fixed", "value": prompt},
        "output": {"dist": "fixed", "value": 2},
    }
    s = scenario(parallel={"tp": 1, "dp_attention": 8, "ep": 8}, workload=wl)
    (replica,) = deploy(s).replicas
    cost = replica.stages[0].cost
    ep = cost.experts
    assert ep is not None and ep.dp == 8
    work = Work.prefill(1, prompt)
    floor = cost._floor
    dense = sum(
        floor.op_time(op, Work(tokens=prompt))
        for op in ep.dense_ops
        if op.kind not in ("attn_prefill", "attn_decode")
    )
    rank_op = next(op for op in ep.dense_ops if op.kind == "attn_prefill")  # 1/8 share
    attention = floor.op_time(replace(rank_op, share=rank_op.share * 8), work)
    res = simulate(s)
    (ttft,) = (res.requests["first_token_s"] - res.requests["arrival_s"]).to_numpy()
    assert ttft >= (dense + attention) * cost.n_layers
    assert cost._slowest_rank(work).prefill_pairs == pytest.approx(8 * work.prefill_pairs)
    # an even share would have been an eighth of the rank tokens
    assert ep.rank_tokens(prompt, prompt) == prompt and ep.rank_tokens(prompt) == prompt // 8


def test_attention_ranks_schedule_their_own_sequences_on_the_host():
    """Each DP rank's scheduler handles its own share of the step's sequences, in
    parallel: 8 decoding sequences over 8 ranks cost one sequence's host time a step."""
    from sim.spec.runtime import HostSpec

    host = HostSpec.model_validate({"fixed": "1 ms", "per_sequence": "1 ms", "per_token": "0 s"})
    assert host.per_rank(8).seconds(8, 8) == pytest.approx(2e-3)
    assert host.per_rank(1) is host
    wl = {
        "requests": 8,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": 64},
        "output": {"dist": "fixed", "value": 17},
    }
    par = {"tp": 1, "dp_attention": 8, "ep": 8}

    def tpot(runtime) -> float:
        res = simulate(scenario(parallel=par, workload=wl, runtime=runtime))
        r = res.requests
        return float(((r["finish_s"] - r["first_token_s"]) / (r["output_tokens"] - 1)).max())

    plain = tpot("bare")
    hosted = tpot({"host": {"per_sequence": "1 ms"}})
    assert hosted - plain == pytest.approx(1e-3, rel=1e-6)


def test_dispatch_dtype_and_the_layers_that_route():
    """DeepEP dispatches tokens in fp8 and combines them in bf16: the dispatch moves half
    the bytes; a model whose first layers are dense (DeepSeek-V3: 3 of 61) routes in the
    other layers only."""
    par = {"tp": 1, "dp_attention": 8, "ep": 8}
    bf16 = deploy(scenario(parallel=par)).replicas[0].stages[0].cost.experts
    fp8 = deploy(scenario(parallel={**par, "experts": {"dispatch_dtype": "fp8"}}))
    fp8 = fp8.replicas[0].stages[0].cost.experts
    assert bf16 is not None and fp8 is not None and bf16.moe_share == 1.0
    a, b = bf16.layer_comm_breakdown(4096), fp8.layer_comm_breakdown(4096)
    group = bf16.group
    size = -(-4096 // 8) * 2 * 1 * 4096 * 2.0  # owned tokens x top-2 x d_model x bf16
    assert a["dispatch"] == pytest.approx(group.all_to_all_routed_s(size))
    assert b["dispatch"] == pytest.approx(group.all_to_all_routed_s(size / 2))
    assert b["combine"] == a["combine"]
    ds = scenario(
        model="deepseek-v3",
        cluster="hgx-h200-x2",
        parallel={"tp": 1, "dp_attention": 16, "ep": 16},
        precision={"weights": "fp8", "activations": "bf16", "kv": "bf16"},
    )
    ep = deploy(ds).replicas[0].stages[0].cost.experts
    assert ep is not None and ep.moe_share == pytest.approx(58 / 61)
    full = ep.group.all_to_all_routed_s(-(-4096 // 16) * 8 * 1 * 7168 * 2.0)
    assert ep.layer_comm_breakdown(4096)["dispatch"] == pytest.approx(58 / 61 * full)
    with pytest.raises(LlmsimError, match="dispatch_dtype"):
        scenario(parallel={**par, "experts": {"dispatch_dtype": "fp9"}})
