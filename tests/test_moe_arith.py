"""Mixtures of experts in sim.arith: parameter counts against the closed forms and the
published totals, dense first layers, shared experts, the router and the capacity
factor in the op model."""

from __future__ import annotations

import math

import pytest

from sim.arith.memory import embedding_weight_elems, layer_weight_elems
from sim.arith.ops import Work, layer_plan, moe_active_experts, op_bytes, op_flops
from sim.arith.params import (
    active_params,
    embedding_params,
    expert_params,
    flops_per_token,
    moe_mlp_params,
    non_embedding_params,
    total_params,
)
from sim.arith.precision import Precision
from sim.errors import LlmsimError
from sim.spec.catalog import load_model
from sim.spec.model import ModelSpec

# Published totals, (total, active) in billions, and the model card they come from:
# DeepSeek-V3 Technical Report (arXiv:2412.19437) §4.2: 671B total, 37B activated (the
# issue's 37.5B is the unrounded count, without the 14B multi-token-prediction module);
# Mixtral of Experts (arXiv:2401.04088) §2: 46.7B total ("47B"), 12.9B active ("13B");
# Qwen/Qwen3-30B-A3B and Qwen/Qwen3-235B-A22B model cards: 30.5B / 3.3B and 235B / 22B.
PUBLISHED = [
    ("deepseek-v3", 671.0, 0.005, 37.5, 0.005),
    ("mixtral-8x7b", 46.7, 0.001, 12.9, 0.002),
    ("qwen3-30b-a3b", 30.5, 0.002, 3.3, 0.02),
    ("qwen3-235b-a22b", 235.0, 0.001, 22.0, 0.01),
]


@pytest.mark.parametrize(("name", "total", "tol_t", "active", "tol_a"), PUBLISHED)
def test_published_totals(name: str, total: float, tol_t: float, active: float, tol_a: float):
    m = load_model(name)
    assert total_params(m) / 1e9 == pytest.approx(total, rel=tol_t)
    assert active_params(m) / 1e9 == pytest.approx(active, rel=tol_a)


def test_qwen3_non_embedding_counts_match_the_model_cards():
    assert non_embedding_params(load_model("qwen3-30b-a3b")) / 1e9 == pytest.approx(29.9, rel=2e-3)
    assert non_embedding_params(load_model("qwen3-235b-a22b")) / 1e9 == pytest.approx(234, rel=2e-3)


def test_deepseek_v3_closed_form():
    m = load_model("deepseek-v3")
    assert (m.n_moe_layers, m.n_dense_layers) == (58, 3)
    d = 7168
    expert = 3 * d * 2048
    assert expert_params(m) == expert
    assert moe_mlp_params(m) == 256 * expert + 1 * expert + d * 256
    attention = 187_107_328  # see tests/test_mla.py
    layers = 61 * (attention + 2 * d) + 58 * moe_mlp_params(m) + 3 * 3 * d * 18432
    assert non_embedding_params(m) == layers
    assert total_params(m) == layers + 2 * 129280 * d + d
    assert active_params(m) == total_params(m) - 58 * (256 - 8) * expert


def test_moe_layer_placement_follows_deepseek_rule():
    def mk(first: int, freq: int) -> ModelSpec:
        return ModelSpec(
            name="t", n_layers=8, d_model=64, n_heads=4, d_ff=256, vocab_size=100,
            max_seq_len=64, mlp="gated",
            moe={"n_experts": 4, "top_k": 2, "first_dense_layers": first, "layer_freq": freq},
        )  # fmt: skip

    # layer i is MoE when i >= first and i % freq == 0
    assert mk(0, 1).n_moe_layers == 8
    assert mk(1, 2).n_moe_layers == 3  # layers 2, 4, 6
    assert mk(3, 1).n_moe_layers == 5
    with pytest.raises(ValueError, match="leave no MoE layer"):
        mk(8, 1)


def test_the_mean_layer_plan_sums_to_the_models_weights_and_flops():
    m = load_model("deepseek-v3")
    # weights: n_layers mean layers + embedding, LM head and final norm = every parameter
    held = layer_weight_elems(m, 1) * m.n_layers + embedding_weight_elems(m, 1)
    assert held == pytest.approx(total_params(m), rel=1e-12)
    # FLOPs of every GEMM of the plan over all layers = the closed form's projections + FFN
    plan = layer_plan(m, 1)
    tokens = 16
    work = Work(tokens=tokens)
    gemm = sum(op_flops(op, work) for op in plan.ops if op.kind == "gemm") * m.n_layers
    split = flops_per_token(m, 0)
    # dropless routing: every token meets top_k experts
    assert gemm == pytest.approx(tokens * (split["qkv"] + split["o_proj"] + split["ffn"]), 1e-12)


def test_shared_experts_and_router_have_their_own_gemms():
    m = load_model("deepseek-v3")
    ops = {op.name: op for op in layer_plan(m, 8).ops}
    assert (ops["moe_router"].n, ops["moe_router"].k) == (256, 7168)
    assert (ops["shared_up"].n, ops["shared_up"].top_k) == (2048 // 8, 0)
    assert (ops["mlp_up"].count, ops["mlp_up"].top_k, ops["mlp_up"].n) == (256, 8, 2048 // 8)
    assert (ops["dense_up"].n, ops["dense_up"].layer_share) == (18432 // 8, 3 / 61)
    assert ops["mlp_up"].layer_share == ops["shared_up"].layer_share == 58 / 61
    # an all-MoE model has no dense ops and shares of exactly 1
    mixtral = layer_plan(load_model("mixtral-8x7b"), 1)
    assert all(op.layer_share == 1.0 for op in mixtral.ops)
    assert not any(op.name.startswith("dense_") for op in mixtral.ops)


def test_expert_weight_reads_are_the_expected_distinct_experts():
    m = load_model("mixtral-8x7b")
    up = next(op for op in layer_plan(m, 1).ops if op.name == "mlp_up")
    p = Precision()
    work = Work(tokens=3)
    weights = moe_active_experts(8, 2, 3) * 4096 * 14336 * 2.0
    assert op_bytes(up, work, p) == weights + 3 * 2 * (4096 + 14336) * 2.0
    assert op_flops(up, work) == 2.0 * 3 * 2 * 4096 * 14336


def test_capacity_factor_runs_fixed_buffers_on_every_expert():
    base = load_model("mixtral-8x7b")
    moe = base.moe.model_copy(update={"capacity_factor": 1.25})  # type: ignore[union-attr]
    m = base.model_copy(update={"moe": moe})
    up = next(op for op in layer_plan(m, 1).ops if op.name == "mlp_up")
    assert up.capacity_factor == 1.25
    tokens = 10
    capacity = math.ceil(1.25 * tokens * 2 / 8)  # 4 rows an expert
    assert op_flops(up, Work(tokens=tokens)) == 2.0 * 8 * capacity * 4096 * 14336
    p = Precision()
    moved = 8 * 4096 * 14336 * 2.0 + 8 * capacity * (4096 + 14336) * 2.0
    assert op_bytes(up, Work(tokens=tokens), p) == moved
    # without one: dropless, tokens · top_k rows
    plain = next(op for op in layer_plan(base, 1).ops if op.name == "mlp_up")
    assert op_flops(plain, Work(tokens=tokens)) == 2.0 * tokens * 2 * 4096 * 14336


def test_tp_must_divide_every_mlp_width():
    m = load_model("deepseek-v3")
    layer_plan(m, 16)  # 2048, 18432 and 128 heads all split 16 ways
    with pytest.raises(LlmsimError, match="does not divide"):
        layer_plan(m, 3)


def test_embedding_counts_are_untouched_by_moe():
    m = load_model("qwen3-30b-a3b")
    assert embedding_params(m) == 2 * 151936 * 2048
