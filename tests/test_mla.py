"""Multi-head latent attention (DeepSeek-V2/V3): the compressed KV cache, the parameter
count, prefill on decompressed K/V and absorbed decode in the latent space."""

from __future__ import annotations

from sim.arith.memory import kv_bytes_per_token, kv_bytes_per_token_per_device
from sim.arith.ops import (
    Work,
    attn_decode_fixed_bytes,
    kv_read_bytes_per_token,
    layer_plan,
    op_bytes,
    op_flops,
)
from sim.arith.params import attention_params
from sim.arith.precision import Precision
from sim.spec.catalog import load_model

H, D, KV_LORA, Q_LORA, NOPE, ROPE, V = 128, 7168, 512, 1536, 128, 64, 128


def ops(tp: int = 1, attention: str = "heads"):
    return {
        op.name: op for op in layer_plan(load_model("deepseek-v3"), tp, Precision(), attention).ops
    }


def test_kv_cache_is_the_latent_and_the_rotary_key():
    m = load_model("deepseek-v3")
    assert kv_bytes_per_token(m) == 70_272 == 61 * (512 + 64) * 2
    # head-split TP keeps the whole latent on every device; batch-split holds 1/tp
    assert kv_bytes_per_token_per_device(m, 8, 61) == 70_272
    assert kv_bytes_per_token_per_device(m, 8, 61, attention="batch") == 70_272 / 8
    assert kv_bytes_per_token(m, "fp8") == 35_136


def test_attention_parameters():
    q = D * Q_LORA + Q_LORA + Q_LORA * H * (NOPE + ROPE)
    kv = D * (KV_LORA + ROPE) + KV_LORA + KV_LORA * H * (NOPE + V)
    o = H * V * D
    assert attention_params(load_model("deepseek-v3")) == q + kv + o == 187_107_328


def test_prefill_runs_on_decompressed_keys_and_values():
    op = ops()["attn_prefill"]
    p = Precision()
    work = Work.prefill(2, 100)
    flops = 2.0 * work.prefill_pairs * H * ((NOPE + ROPE) + V)  # QKᵀ at 192, PV at 128
    assert op_flops(op, work) == flops
    q_o = 200 * H * ((NOPE + ROPE) + V) * 2.0
    kv_read = 200 * H * ((NOPE + ROPE) + V) * 2.0  # decompressed K and V
    kv_write = 200 * (KV_LORA + ROPE) * 2.0  # the latent is what is cached
    assert op_bytes(op, work, p) == q_o + kv_read + kv_write
    # a cached prefix is read as latents and decompressed (kv_b's FLOPs on it)
    cached = Work.prefill(1, 10, cached=50)
    assert op_flops(op, cached) == 2.0 * cached.prefill_pairs * H * 320 + 50 * 2.0 * KV_LORA * H * (
        NOPE + V
    )


def test_decode_is_absorbed_into_the_latent_space():
    op = ops()["attn_decode"]
    p = Precision()
    work = Work.decode(4, 1000)
    # QKᵀ over the latent and rotary key (576), PV over the latent (512), all heads
    assert op_flops(op, work) == 2.0 * 4000 * H * (KV_LORA + ROPE) + 2.0 * 4000 * H * KV_LORA
    per_seq = H * ((KV_LORA + ROPE) + KV_LORA) * 2.0 + (KV_LORA + ROPE) * 2.0
    assert attn_decode_fixed_bytes(op, p) == per_seq
    assert kv_read_bytes_per_token(op, p) == (KV_LORA + ROPE) * 2.0
    assert op_bytes(op, work, p) == 4 * per_seq + 4000 * (KV_LORA + ROPE) * 2.0


def test_projections_and_their_tp_split():
    one, eight = ops(1), ops(8)
    # the down projections are replicated, the up and output projections split by heads
    assert (eight["qkv_a_proj"].n, eight["qkv_a_proj"].k) == (Q_LORA + KV_LORA + ROPE, D)
    assert (eight["q_b_proj"].n, eight["q_b_proj"].k) == (H // 8 * (NOPE + ROPE), Q_LORA)
    assert (eight["kv_b_proj"].n, eight["kv_b_proj"].k) == (H // 8 * (NOPE + V), KV_LORA)
    assert (eight["o_proj"].n, eight["o_proj"].k) == (D, H // 8 * V)
    assert eight["attn_decode"].heads == H // 8
    # absorbed decode multiplies q by W_UK and o by W_UV: the same FLOPs as kv_b on a token
    kv_b = op_flops(one["kv_b_proj"], Work(tokens=1))
    assert kv_b == 2.0 * H * NOPE * KV_LORA + 2.0 * H * KV_LORA * V
    # attention split by batch: every head, 1/tp of the sequences, projections by columns
    batch = ops(8, "batch")
    assert (batch["attn_decode"].heads, batch["attn_decode"].share) == (H, 1 / 8)
    assert batch["qkv_a_proj"].n == -(-(Q_LORA + KV_LORA + ROPE) // 8)
