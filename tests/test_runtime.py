"""The serving runtime (sim.spec.runtime, runtimes/*.yaml) as the engine and the cost
kernel apply it, each setting held to a closed form: host time adds to or hides under
the device step, CUDA graphs drop launches and pad batches, fused ops cost nothing, the
communication dtype sizes all-reduces, the custom all-reduce prices small messages,
reserve admission never preempts, a runtime without a KV cache recomputes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.arith.ops import Work, causal_pairs, prefill_keys
from sim.errors import LlmsimError
from sim.plan.deploy import deploy
from sim.results.run import simulate
from sim.spec.catalog import load_runtime
from sim.spec.runtime import FUSABLE, RuntimeSpec, vllm_capture_sizes
from tests.scenarios_for_tests import make
from tests.test_engine import BASE, check_invariants

SETTINGS = (
    *("host", "kernel_launch_s", "graphs", "fused", "io_dtype", "all_reduce"),
    *("custom_max_bytes", "custom_latency_s", "custom_bandwidth", "admission"),
    *("overlap_weight_gather", "kv_cache"),
)
RUNTIMES = sorted(p.stem for p in (Path(__file__).parents[1] / "runtimes").glob("*.yaml"))
ONE = {
    "workload": {
        "requests": 1,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": 200},
        "output": {"dist": "fixed", "value": 50},
    }
}


def scenario(**changes):
    return make({**BASE, **ONE}, **changes)


def stage_cost(s):
    return deploy(s).replicas[0].stages[0].cost


# ----------------------------------------------------------------- the catalog


@pytest.mark.parametrize("name", RUNTIMES)
def test_every_shipped_runtime_loads_and_sources_what_it_sets(name):
    rt = load_runtime(name)
    assert rt.name == name and rt.description and rt.engine
    bare = RuntimeSpec()
    set_fields = [f for f in SETTINGS if getattr(rt, f) != getattr(bare, f)]
    for f in set_fields:
        key = f.removesuffix("_s")
        assert any(k.split(".")[0] == key for k in rt.sources), f"{name}: {f} without a source"
    for path, how in rt.fitted.items():
        assert how == "bench/fit_runtimes.py"
        assert any(path.startswith(k) for k in rt.sources), f"{name}: {path} without a note"


def test_vllm_capture_sizes_are_vllms():
    assert vllm_capture_sizes(256) == (1, 2, 4, *range(8, 257, 8))
    assert vllm_capture_sizes(20) == (1, 2, 4, 8, 16, 20)


def test_bad_runtime_fields_are_named():
    with pytest.raises(ValueError, match="cannot fuse"):
        RuntimeSpec.model_validate({"fused": ["mlp_up"]})
    with pytest.raises(ValueError, match="captured sizes"):
        RuntimeSpec.model_validate({"graphs": {"sizes": [4, 2]}})
    with pytest.raises(LlmsimError, match="vllm-v1"):
        scenario(runtime="vllm-v2")


def test_a_scenario_may_extend_a_catalog_runtime():
    s = scenario(runtime={"base": "vllm-v0", "host": {"fixed": "1 ms"}})
    assert s.runtime.host.fixed_s == pytest.approx(1e-3)
    assert s.runtime.graphs.max_batch == 256  # the rest is vllm-v0's


# ----------------------------------------------------------------- the cost kernel


def test_graphs_drop_launches_pad_to_captured_sizes_and_stay_above_the_floor():
    eager = stage_cost(scenario(runtime={"kernel_launch": "10 us"}))
    graphs = stage_cost(scenario(runtime={"graphs": {"enabled": True, "max_batch": 256}}))
    d5, d8 = Work.decode(5, 1000), Work.decode(8, 1000)
    assert graphs.graph_size(d5) == 8 and graphs.graph_size(Work.decode(300, 10)) is None
    # a padded batch of 5 runs the 8-row matmuls
    assert graphs.token_part_s(8, True) == pytest.approx(
        graphs.time(d5, 5)
        - graphs.attention_s(d5, True)
        - graphs.lm_head_s(8, True)
        - graphs._graph_launch
    )
    assert graphs.time(d5, 5) < graphs.time(d8, 8) + 1e-12
    # eager decode at batch 1 pays >= 10 us per kernel: slower than the graph
    one = Work.decode(1, 1000)
    n_kernels = sum(1 for _ in eager._token_ops) * eager.n_layers
    assert eager.time(one, 1) >= n_kernels * 10e-6
    assert graphs.time(one, 1) < eager.time(one, 1)
    # never faster than the roofline of its ops
    floor = eager._floor
    ops_floor = sum(floor.op_time(o, Work(tokens=8)) for o in graphs._token_ops) * graphs.n_layers
    assert graphs.token_part_s(8, True) >= ops_floor * (1 - 1e-12)


def test_fused_ops_cost_nothing_of_their_own():
    plain = stage_cost(scenario())
    fused = stage_cost(scenario(runtime={"fused": list(FUSABLE)}))
    w = Work(tokens=512)
    gone = sum(plain.op_s(o, w) for o in plain._token_ops if o.name in FUSABLE)
    assert gone > 0
    assert fused.token_part_s(512) == pytest.approx(plain.token_part_s(512) - gone * plain.n_layers)
    assert fused.bytes(w) < plain.bytes(w)


def test_the_communication_dtype_sizes_all_reduces():
    fp8 = {
        "model": "llama-2-70b",
        "parallel": {"tp": 8},
        "precision": {"weights": "fp8", "activations": "fp8", "kv": "fp8"},
    }
    s8 = make({**BASE, **ONE, **fp8})
    s16 = make({**BASE, **ONE, **fp8, "runtime": {"io_dtype": "bf16"}})
    a, b = stage_cost(s8), stage_cost(s16)
    layout8, layout16 = a.layout, b.layout
    assert layout8 is not None and layout16 is not None
    col = layout8.collectives
    tokens = 4096
    assert layout8.layer_comm_s(tokens) == pytest.approx(2 * col.all_reduce_s(tokens * 8192 * 1))
    assert layout16.layer_comm_s(tokens) == pytest.approx(2 * col.all_reduce_s(tokens * 8192 * 2))


def test_the_custom_all_reduce_prices_small_messages_inside_the_switch():
    nccl = stage_cost(make({**BASE, **ONE, "model": "llama-2-70b", "parallel": {"tp": 8}}))
    rt = {"all_reduce": "custom", "custom_max_bytes": "8 MiB", "custom_latency": "5 us"}
    custom = stage_cost(
        make({**BASE, **ONE, "model": "llama-2-70b", "parallel": {"tp": 8}, "runtime": rt})
    )
    small, big = 8192 * 2, 64 * 2**20
    c = custom.layout.collectives
    route = c.cluster.route("dev0", "dev1")
    one_shot = 5e-6 + 7 * small / route.bandwidth_bytes_per_s
    assert c.all_reduce_s(small) == pytest.approx(
        min(one_shot, 2 * 5e-6 + 2 * small * 7 / 8 / route.bandwidth_bytes_per_s)
    )
    assert c.all_reduce_s(small) < nccl.layout.collectives.all_reduce_s(small)
    assert c.all_reduce_s(big) == nccl.layout.collectives.all_reduce_s(big)  # NCCL above the limit
    # Replayed as a CUDA graph, the microbenchmark's launch comes off the latency.
    graphed = stage_cost(
        make(
            {
                **BASE,
                **ONE,
                "model": "llama-2-70b",
                "parallel": {"tp": 8},
                "runtime": {**rt, "graphs": {"enabled": True}},
            }
        )
    )
    g = graphed.layout.collectives
    launch = g.cluster.device.launch_overhead_s
    assert launch > 0
    assert g.all_reduce_s(small) == pytest.approx(
        min(
            one_shot - launch, 2 * (5e-6 - launch) + 2 * small * 7 / 8 / route.bandwidth_bytes_per_s
        )
    )


# ----------------------------------------------------------------- the engine


def _tpot(s) -> float:
    res = simulate(s)
    check_invariants(res)
    (r,) = res.requests.itertuples()
    return (r.finish_s - r.first_token_s) / (r.output_tokens - 1)


def test_host_time_adds_to_the_step_or_hides_under_it():
    device = _tpot(scenario())
    host = {"fixed": "2 ms", "per_sequence": "1 ms"}
    serial = _tpot(scenario(runtime={"host": host}))
    assert serial == pytest.approx(device + 3e-3, rel=1e-9)
    hidden = _tpot(scenario(runtime={"host": {**host, "overlap": True}}))
    assert hidden == pytest.approx(max(device, 3e-3), rel=1e-9)
    slow_host = _tpot(scenario(runtime={"host": {"fixed": "50 ms", "overlap": True}}))
    assert slow_host == pytest.approx(50e-3, rel=1e-9)


def test_reserve_admission_never_preempts_where_optimistic_does():
    burst = dict(
        scheduler={"policy": "vllm", "gpu_memory_utilization": 0.2},
        workload__arrival={"process": "burst"},
        workload__prompt={"dist": "fixed", "value": 1500},
        workload__output={"dist": "fixed", "value": 1500},
        workload__requests=60,
    )
    optimistic = simulate(scenario(**burst))
    reserve = simulate(scenario(runtime={"admission": "reserve"}, **burst))
    assert optimistic.summary.preemptions > 0
    assert reserve.summary.preemptions == 0
    check_invariants(reserve)
    assert reserve.summary.finished == optimistic.summary.finished == 60


def test_without_a_kv_cache_every_step_recomputes_the_sequence():
    s = scenario(runtime="hf-eager-no-cache")
    res = simulate(s)
    check_invariants(res)
    it = res.iterations
    cost = stage_cost(s)
    prompt, out = 200, 50
    # step k (k = 0 is the prompt) computes prompt + k tokens with logits for each
    expected = []
    for k in range(out):
        n = prompt + k
        w = Work(
            tokens=n,
            prefill_tokens=n,
            prefill_pairs=causal_pairs(n, 0, None),
            prefill_kv_tokens=prefill_keys(n, 0, None),
        )
        expected.append(cost.time(w, n))
    durations = (it["end_s"] - it["start_s"]).to_list()
    assert durations == pytest.approx(expected, rel=1e-9)
    cached = _tpot(scenario())
    assert min(durations[1:]) > cached  # recomputation costs more than a cached step
    # the useful work is a cached run's: MFU below HFU
    assert res.summary.mfu < res.summary.hfu
