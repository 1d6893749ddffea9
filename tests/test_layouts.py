"""Tensor-parallel layouts (Pope et al. 2022): communication scaling, the prefill /
decode trade-off of weight gathering, memory per device, and the checks."""

from __future__ import annotations

import functools
import math

import pytest

from sim.arith.memory import layer_weight_elems
from sim.arith.ops import Work, layer_plan
from sim.arith.params import layer_params
from sim.arith.precision import Precision
from sim.cost import RooflineKernel
from sim.cost.layouts import (
    LAYOUTS,
    Layout,
    WeightStationary2D,
    build_layout,
    check_layout,
    grid_xs,
)
from sim.cost.topology import Cluster, build_cluster
from sim.errors import LlmsimError
from sim.spec import catalog

ONE_D, TWO_D, GATHERED = "1d-weight-stationary", "2d-weight-stationary", "weight-gathered"
BF16 = Precision()


@functools.cache
def torus(dims: tuple[int, ...]) -> Cluster:
    spec = catalog.load_cluster("tpu-v4-4x4x8")
    assert spec.torus is not None
    shape = spec.torus.model_copy(update={"dims": dims})
    return build_cluster(spec.model_copy(update={"name": f"tpu-v4-{dims}", "torus": shape}))


# 16 chips: a 4x4 face of a 4x4x4 cube; 64: the cube; 256: a 4x8x8 torus.
SLICES = {16: (4, 4, 4), 64: (4, 4, 4), 256: (4, 8, 8)}


def layout(name: str, model: str, n: int, attention: str = "heads") -> Layout:
    return build_layout(
        name, catalog.load_model(model), n, BF16, torus(SLICES[n]), tuple(range(n)),
        attention=attention,
    )  # fmt: skip


def two_d(model: str, n: int, attention: str = "heads") -> WeightStationary2D:
    out = layout(TWO_D, model, n, attention)
    assert isinstance(out, WeightStationary2D)
    return out


def test_registry_names():
    assert set(LAYOUTS) == {ONE_D, TWO_D, GATHERED}


@pytest.mark.parametrize("attention", ["heads", "batch"])
def test_2d_communication_falls_as_one_over_root_n_and_1d_stays_flat(attention):
    """GPT-3 175B, 8192 tokens a step, on TPU v4 tori of 16, 64 and 256 chips."""
    tokens = 8192
    two = {n: layout(TWO_D, "gpt3-175b", n, attention).layer_comm_s(tokens) for n in SLICES}
    for small, big in ((16, 64), (64, 256)):
        ratio = two[small] / two[big]
        assert ratio == pytest.approx(math.sqrt(big / small), rel=0.20), (small, big, two)
    if attention == "batch":  # 1D needs tp | n_heads=96 with heads, so only by batch here
        one = {n: layout(ONE_D, "gpt3-175b", n, attention).layer_comm_s(tokens) for n in SLICES}
        assert max(one.values()) / min(one.values()) < 1.2, one
        # 2D beats 1D beyond ~16 chips (Pope et al. §3.2.2)
        assert two[64] < 0.5 * one[64]
        assert two[256] < 0.25 * one[256]


def test_2d_grid_follows_the_torus_axes_near_the_optimum():
    """X* = √(n·2E·b / Σ(in + mid)) = √(n/3) for a GPT block; X is the nearest product
    of torus axes: 4 of a 4x4 face, 4 of the cube, 8 of the 4x8x8."""
    grids = {n: two_d("gpt3-175b", n) for n in SLICES}
    assert {n: (g.x, g.y) for n, g in grids.items()} == {16: (4, 4), 64: (4, 16), 256: (8, 32)}
    assert grids[64].best_x() == pytest.approx(math.sqrt(64 / 3), rel=0.01)


def _layer_s(name: str, model: str, work: Work, n: int = 64) -> float:
    """Per-layer compute (the roofline ops of the plan, the same for every layout) plus
    the layout's communication."""
    m = catalog.load_model(model)
    kernel = RooflineKernel(catalog.device_of("tpu-v4"), BF16)
    plan = layer_plan(m, n, BF16, "batch")
    compute = sum(kernel.op_time(op, work) for op in plan.ops)
    return compute + layout(name, model, n, "batch").layer_comm_s(work.tokens)


@pytest.mark.parametrize("model", ["palm-540b", "palm-62b"])
def test_weight_gathered_wins_large_batch_prefill_and_loses_at_batch_one(model):
    prefill = Work.prefill(512, 2048)  # 2^20 tokens
    assert _layer_s(GATHERED, model, prefill) < 0.8 * _layer_s(ONE_D, model, prefill)
    decode = Work.decode(1, 2048)
    assert _layer_s(GATHERED, model, decode) > 50 * _layer_s(ONE_D, model, decode)


def test_weight_gathered_communication_does_not_depend_on_the_batch():
    wg = layout(GATHERED, "palm-540b", 64, "batch")
    assert wg.layer_comm_s(1) == wg.layer_comm_s(1 << 20) > 0
    assert wg.layer_comm_s(0) == 0.0
    # one all-gather of the layer's bf16 weights over the 4x4x4 torus: S(1 − 1/n)/2B
    size = layer_params(catalog.load_model("palm-540b")) * 2
    expected = size * (63 / 64) / (2 * 45e9)
    assert wg.layer_comm_s(1) == pytest.approx(expected, rel=0.01)


def test_1d_matches_the_all_reduces_of_the_plan():
    """Megatron: two all-reduces of T·E per layer (one for PaLM's parallel block)."""
    gpt = layout(ONE_D, "gpt3-175b", 16)
    col = gpt.collectives
    tokens = 4096
    assert gpt.layer_comm_s(tokens) == pytest.approx(2 * col.all_reduce_s(tokens * 12288 * 2))
    palm = layout(ONE_D, "palm-540b", 64, "batch")
    parts = palm.layer_comm_breakdown(tokens)
    assert parts["all_reduce"] == pytest.approx(palm.collectives.all_reduce_s(tokens * 18432 * 2))
    # batch-sharded multiquery attention: small all-to-alls of Q/K/V and the output
    assert 0 < parts["all_to_all"] < 0.1 * parts["all_reduce"]


def test_memory_per_device():
    model = catalog.load_model("palm-540b")
    one = layout(ONE_D, "palm-540b", 64, "batch")
    two = layout(TWO_D, "palm-540b", 64, "batch")
    wg = layout(GATHERED, "palm-540b", 64, "batch")
    per_layer = layer_params(model)
    assert one.weight_elems_per_device() == layer_weight_elems(model, 64, "batch")
    assert two.weight_elems_per_device() == pytest.approx(per_layer / 64, rel=0.01)
    assert wg.weight_elems_per_device() == pytest.approx(per_layer / 64)
    assert one.workspace_bytes() == two.workspace_bytes() == 0.0
    assert wg.workspace_bytes() == per_layer * BF16.w_bytes
    total = {
        name: lay.weight_elems_per_device() * BF16.w_bytes + lay.workspace_bytes()
        for name, lay in ((ONE_D, one), (TWO_D, two), (GATHERED, wg))
    }
    assert total[TWO_D] <= total[ONE_D] * 1.001 < total[GATHERED]
    assert total[GATHERED] > 60 * total[ONE_D]


def test_layer_comm_is_memoised_and_zero_without_tokens():
    two = layout(TWO_D, "gpt3-175b", 64)
    first = two.layer_comm_s(1000)
    assert two.layer_comm_s(1000) == first
    assert 1000 in two._comm
    assert two.layer_comm_s(0) == 0.0


def test_links_cover_the_groups_collectives():
    one = layout(ONE_D, "gpt3-175b", 16)
    two = layout(TWO_D, "gpt3-175b", 16)
    assert set(one.links()) == set(two.links())  # a 4x4 face: the same axis rings
    assert len(one.links()) == 64


def test_layouts_on_a_gpu_node():
    cluster = build_cluster(catalog.load_cluster("dgx-h100"))
    model = catalog.load_model("llama-2-70b")
    two = build_layout(TWO_D, model, 8, BF16, cluster, tuple(range(8)))
    assert isinstance(two, WeightStationary2D) and (two.x, two.y) == (2, 4)
    one = build_layout(ONE_D, model, 8, BF16, cluster, tuple(range(8)))
    for tokens in (1, 64, 4096):
        assert one.layer_comm_s(tokens) > 0 and two.layer_comm_s(tokens) > 0


# ---------------------------------------------------------------------- checks


def test_unknown_layout_lists_the_valid_ones():
    model = catalog.load_model("llama-2-7b")
    with pytest.raises(LlmsimError) as err:
        check_layout("3d-magic", model, 8, "heads")
    assert err.value.key == "parallel.tp_layout"
    for name in LAYOUTS:
        assert name in str(err.value)


@pytest.mark.parametrize("tp", [2, 3, 7])
def test_2d_needs_two_axes(tp):
    with pytest.raises(LlmsimError, match="two axes") as err:
        check_layout(TWO_D, catalog.load_model("llama-2-7b"), tp, "heads")
    assert err.value.key == "parallel.tp_layout"


def test_2d_needs_a_grid_that_divides_the_shapes():
    llama = catalog.load_model("llama-2-7b")  # d_model 4096, d_ff 11008, 32 heads
    assert grid_xs(llama, 6, "heads") == grid_xs(llama, 6, "batch") == []
    with pytest.raises(LlmsimError, match="n_heads=32") as err:
        check_layout(TWO_D, llama, 6, "heads")
    assert err.value.key == "parallel.tp_layout"
    assert "tried 2x3, 3x2" in str(err.value)
    palm = catalog.load_model("palm-540b")  # 48 heads: Y ≤ 16 by heads, any Y by batch
    assert grid_xs(palm, 256, "heads") == [16, 32, 64, 128]
    assert grid_xs(palm, 256, "batch") == [2, 4, 8, 16, 32, 64, 128]
    check_layout(TWO_D, palm, 256, "heads")
    with pytest.raises(LlmsimError, match="mixture of experts"):
        check_layout(TWO_D, catalog.load_model("mixtral-8x7b"), 8, "heads")


def test_1d_errors_name_the_layout_and_weight_gathered_takes_any_tp():
    model = catalog.load_model("llama-2-7b")
    with pytest.raises(LlmsimError, match="1d-weight-stationary: 3 does not divide"):
        check_layout(ONE_D, model, 3, "heads")
    check_layout(GATHERED, model, 3, "heads")
    with pytest.raises(LlmsimError, match="attention"):
        check_layout(ONE_D, model, 2, "rows")
    cluster = build_cluster(catalog.load_cluster("dgx-h100"))
    with pytest.raises(LlmsimError, match="got 2 devices"):
        build_layout(ONE_D, model, 4, BF16, cluster, (0, 1))


def test_a_layout_that_prices_attention_by_batch_sizes_and_balances_by_batch_too():
    """2D on tp=8 of a 12-head model prices attention as an even share of sequences:
    the balanced layer split and the KV cache size follow that same split."""
    from sim.arith.memory import kv_bytes_per_token_per_device
    from sim.plan import load_scenario
    from sim.plan.layers import plan_attention
    from sim.plan.memory import plan_memory as plan_replica
    from sim.results.run import simulate

    s = load_scenario(
        {
            "name": "2d-uneven-heads",
            "cluster": "dgx-a100-x2",
            "model": "gpt3-125m",
            "parallel": {
                "tp": 8,
                "pp": 2,
                "tp_layout": TWO_D,
                "pipeline": {"layer_split": "balanced"},
            },
            "workload": {
                "requests": 10,
                "arrival": {"process": "poisson", "rate": 5},
                "prompt": {"dist": "fixed", "value": 64},
                "output": {"dist": "fixed", "value": 8},
            },
        }
    )
    assert plan_attention(s) == "batch"
    cluster = build_cluster(s.cluster)
    sizes = plan_replica(s, cluster, BF16)
    model = s.model
    assert sizes.kv_bytes_per_token == [
        kv_bytes_per_token_per_device(model, 8, n, "bf16", "batch") for n in sizes.stages
    ]
    assert simulate(s, records=False).summary.finished == 10
