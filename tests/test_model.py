"""Tensor-parallel sharding, op arithmetic and closed forms of sim.model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arith.memory import kv_bytes_per_token, kv_bytes_per_token_per_device, layer_weight_elems
from sim.arith.ops import (
    Work,
    check_tp,
    layer_plan,
    moe_active_experts,
    op_bytes,
    op_flops,
    valid_tp,
)
from sim.arith.params import active_params, flops_per_token, layer_params
from sim.arith.precision import Precision
from sim.errors import LlmsimError
from sim.spec.catalog import entries, load_model


@pytest.mark.parametrize("name", ["llama-2-7b", "llama-2-70b", "opt-13b", "mixtral-8x7b"])
@pytest.mark.parametrize("tp", [1, 2, 4, 8])
def test_tp_shards_sum_to_the_whole(name, tp):
    """What tp devices compute adds up to the unsharded layer (KV heads aside)."""
    m = load_model(name)
    one = layer_plan(m, 1)
    many = layer_plan(m, tp)
    work = Work.prefill(2, 100)
    gemm_one = sum(op_flops(o, work) for o in one.ops if o.kind == "gemm")
    gemm_tp = sum(op_flops(o, work) for o in many.ops if o.kind == "gemm")
    router = sum(op_flops(o, work) for o in one.ops if o.name == "moe_router")
    kv_extra = 0.0
    if m.kv_heads < tp:  # K/V heads replicated when fewer than tp
        kv_extra = 2 * work.tokens * m.d_model * 2 * m.head_dim * (tp - m.kv_heads)
    assert tp * gemm_tp == pytest.approx(gemm_one + (tp - 1) * router + kv_extra)
    if m.kv_heads >= tp:
        weights = layer_weight_elems(m, tp) * tp
        replicated = (tp - 1) * (2 * m.d_model if m.norm == "rmsnorm" else 4 * m.d_model)
        replicated += (tp - 1) * (m.moe.n_experts * m.d_model if m.moe else 0)
        replicated += (tp - 1) * (2 * m.d_model if m.bias else 0)  # o_proj and mlp_down biases
        assert weights == pytest.approx(layer_params(m) + replicated)


def test_tp_collectives_only_when_split():
    m = load_model("llama-2-7b")
    assert not [o for o in layer_plan(m, 1).ops if o.kind == "all_reduce"]
    assert len([o for o in layer_plan(m, 2).ops if o.kind == "all_reduce"]) == 2
    palm = load_model("palm-62b")  # parallel block: one all-reduce per layer
    assert len([o for o in layer_plan(palm, 4).ops if o.kind == "all_reduce"]) == 1


def test_tp_that_does_not_divide_heads_says_why():
    m = load_model("llama-2-7b")
    with pytest.raises(LlmsimError, match=r"3 does not divide n_heads=32") as err:
        check_tp(m, 3)
    assert err.value.key == "parallel.tp"
    assert "valid tp: 1, 2, 4, 8, 16, 32" in str(err.value)


def test_gqa_kv_heads_replicate_beyond_their_count():
    m = load_model("llama-2-70b")  # 8 KV heads
    assert 16 in valid_tp(m)
    attn = next(o for o in layer_plan(m, 16).ops if o.kind == "attn_decode")
    assert (attn.heads, attn.kv_heads) == (4, 1)


def test_decode_attention_reads_the_whole_kv_cache():
    m = load_model("llama-2-7b")
    p = Precision()
    attn = next(o for o in layer_plan(m, 1, p).ops if o.kind == "attn_decode")
    w = Work.decode(8, 1000)
    kv_read = 8 * 1000 * 2 * m.kv_dim * 2
    assert op_bytes(attn, w, p) >= kv_read
    assert op_bytes(attn, w, p) < kv_read * 1.01
    assert op_flops(attn, w) == 4 * 8 * 1000 * m.q_dim


def test_prefill_attention_is_causal_and_flash():
    m = load_model("llama-2-7b")
    attn = next(o for o in layer_plan(m).ops if o.kind == "attn_prefill")
    w = Work.prefill(1, 1024)
    assert op_flops(attn, w) == 4 * m.q_dim * 1024 * 1025 / 2
    # No s×s score matrix in HBM: bytes linear in the prompt.
    w2 = Work.prefill(1, 2048)
    assert op_bytes(attn, w2, Precision()) == pytest.approx(2 * op_bytes(attn, w, Precision()))


def test_weight_dtype_changes_bytes_not_flops():
    m = load_model("llama-2-7b")
    w = Work.decode(1, 10)
    bf16 = layer_plan(m, 1, Precision("bf16"))
    int4 = layer_plan(m, 1, Precision("int4"))
    assert bf16.flops(w) == int4.flops(w)
    # int4 is half a byte a weight plus an fp16 scale and zero per group of 64.
    assert int4.precision.w_bytes == 0.5 + 4 / 64
    assert int4.weight_bytes == pytest.approx(bf16.weight_bytes / 2 * (0.5 + 4 / 64))
    assert int4.bytes(w) < 0.33 * bf16.bytes(w)
    assert Precision("int4", group_size=32).w_bytes == 0.625  # gpt-fast's groups


def test_moe_touches_top_k_experts_per_token():
    m = load_model("mixtral-8x7b")
    assert active_params(m) == pytest.approx(12.9e9, rel=0.01)
    split = flops_per_token(m)
    dense_equiv = 2 * 3 * m.d_model * m.d_ff_expert * 2 * m.n_layers
    assert split["ffn"] == pytest.approx(dense_equiv, rel=0.01)
    assert moe_active_experts(8, 2, 1) == pytest.approx(2.0)
    assert moe_active_experts(8, 2, 1000) == pytest.approx(8.0)


def test_unknown_dtype_names_the_key():
    with pytest.raises(LlmsimError, match="unknown dtype 'fp7'") as err:
        Precision(weights="fp7")
    assert err.value.key == "precision.weights"


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from([e.name for e in entries("model")]),
    tokens=st.integers(1, 4096),
    kv=st.integers(0, 8192),
)
def test_flops_and_bytes_never_negative_and_monotone(name, tokens, kv):
    m = load_model(name)
    plan = layer_plan(m, 1)
    a = Work(tokens=tokens, decode_seqs=tokens, decode_kv_tokens=kv)
    b = Work(tokens=tokens + 1, decode_seqs=tokens + 1, decode_kv_tokens=kv + 1)
    assert 0 <= plan.flops(a) <= plan.flops(b)
    assert 0 < plan.bytes(a) <= plan.bytes(b)


def test_quantised_kv_sizes_carry_their_group_scales():
    """int8/int4 KV: each group of values keeps an fp16 scale and zero, in the cache's
    size as in the bytes attention reads."""
    m = load_model("llama-2-7b")
    int4 = Precision(kv="int4", group_size=32)
    per_value = 0.5 + 4 / 32
    assert kv_bytes_per_token(m, int4) == 2.0 * m.n_layers * m.kv_dim * per_value
    assert kv_bytes_per_token(m, int4) > kv_bytes_per_token(m, "int4")
    assert kv_bytes_per_token_per_device(m, 2, 16, int4) == 2.0 * 16 * (m.kv_dim / 2) * per_value
    assert kv_bytes_per_token(m, Precision()) == kv_bytes_per_token(m, "bf16")
