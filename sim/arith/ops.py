"""A model as layers of ops with shapes, and the FLOPs and bytes each op costs.

The arithmetic of the seeds lives here. A matmul of (m×k)·(k×n) is 2mkn FLOPs; it
moves its weights (k·n elements), reads its input (m·k) and writes its output (m·n).
Attention is FlashAttention-style: the s×s score matrix never reaches HBM, so prefill
attention reads Q, K, V once and writes O, and decode attention reads the whole KV
cache of every sequence. Element-wise ops (norms, activation, rotary, residual add)
read and write their tensors once.

Every op is the share one device of a `tp`-way tensor-parallel group holds and
computes (Megatron 1D layout: QKV and MLP-up split by output columns, O and MLP-down
by input rows; heads split across devices; K/V heads replicated when there are fewer
than `tp`). Norms and residual adds are replicated on every device.

Work is described by a `Work` record (query tokens, attention pairs, KV tokens read),
so one call prices a whole micro-batch: nothing here loops over requests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from sim.arith.memory import layer_weight_elems, local_widths
from sim.arith.precision import DEQUANT_FLOPS_PER_VALUE, QUANTISED, Precision
from sim.errors import LlmsimError
from sim.spec.model import ModelSpec

OpKind = Literal["gemm", "attn_prefill", "attn_decode", "elementwise", "all_reduce"]


@dataclass(frozen=True)
class Op:
    """One op of one layer on one device.

    gemm: `k` -> `n` per token, `count` identical matrices (MoE experts), of which
    `routed` of the tokens' `top_k` choices reach (1 for dense layers).
    attention: `heads`, `kv_heads` and `head_dim` held by this device.
    elementwise: `read_elems` and `write_elems` per token, `flops_per_token`.
    all_reduce: `elems` per token.
    `share` < 1: attention split by batch (each device runs all heads for 1/tp of the
    sequences; Pope et al. for multiquery models) instead of by heads.
    """

    name: str
    kind: OpKind
    n: int = 0
    k: int = 0
    count: int = 1
    top_k: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    read_elems: float = 0.0
    write_elems: float = 0.0
    flops_per_token: float = 0.0
    elems: int = 0
    share: float = 1.0  # attention sharded by batch: this device's share of the sequences


def causal_pairs(chunk: int, done: int, window: int | None = None) -> float:
    """Causal (query, key) pairs of a `chunk` of queries after `done` cached tokens: the
    query at position p (1-based) attends to p keys, or to the last `window` of them
    under sliding-window attention."""
    full = chunk * done + chunk * (chunk + 1) / 2
    if window is None or done + chunk <= window:
        return full
    first = done + 1  # the chunk's first query position
    if first >= window:
        return float(chunk * window)
    # positions first..window attend to p keys, window+1..done+chunk to `window`
    return (first + window) * (window - first + 1) / 2 + (done + chunk - window) * window


def prefill_keys(chunk: int, done: int, window: int | None = None) -> int:
    """Keys a prefill chunk reads: every cached token and the chunk's own, or with a
    sliding window the `window - 1` before the chunk's first query and the chunk."""
    if window is None:
        return done + chunk
    return min(done + chunk, window - 1 + chunk)


@dataclass(frozen=True)
class Work:
    """What a micro-batch asks of one layer, summed over its sequences.

    tokens: query tokens (prefill chunk tokens + one per decoding sequence).
    prefill_tokens / prefill_pairs / prefill_kv_tokens: for the prefilling sequences,
        their query tokens, their causal (query, key) pairs, and the keys they read
        (context already cached plus the chunk).
    decode_seqs / decode_kv_tokens: decoding sequences and the KV tokens they read.
    """

    tokens: int = 0
    prefill_tokens: int = 0
    prefill_pairs: float = 0.0
    prefill_kv_tokens: int = 0
    decode_seqs: int = 0
    decode_kv_tokens: int = 0

    @staticmethod
    def prefill(batch: int, prompt: int, cached: int = 0, window: int | None = None) -> Work:
        """`batch` sequences each prefilling `prompt` tokens after `cached` ones (under a
        sliding `window`, each query attends to at most `window` keys)."""
        return Work(
            tokens=batch * prompt,
            prefill_tokens=batch * prompt,
            prefill_pairs=batch * causal_pairs(prompt, cached, window),
            prefill_kv_tokens=batch * prefill_keys(prompt, cached, window),
        )

    @staticmethod
    def decode(batch: int, context: int) -> Work:
        """`batch` sequences each generating one token against `context` cached ones."""
        return Work(tokens=batch, decode_seqs=batch, decode_kv_tokens=batch * context)


@dataclass(frozen=True)
class MicroBatch:
    work: Work
    logits: int


def split_work(work: Work, logits: int, parts: int) -> list[MicroBatch]:
    """Cut a step's work into `parts` micro-batches of (nearly) equal size: integer
    counts differ by at most one, sums of pairs and KV tokens are shared out in the
    same proportions as the tokens. Empty parts are dropped."""
    parts = max(1, min(parts, max(work.tokens, 1)))
    if parts == 1:
        return [MicroBatch(work, logits)]

    def cut(total: int) -> list[int]:
        base, extra = divmod(total, parts)
        return [base + (1 if i < extra else 0) for i in range(parts)]

    pre, seqs, lg = cut(work.prefill_tokens), cut(work.decode_seqs), cut(logits)
    out = []
    for i in range(parts):
        p_share = pre[i] / work.prefill_tokens if work.prefill_tokens else 0.0
        d_share = seqs[i] / work.decode_seqs if work.decode_seqs else 0.0
        mb = Work(
            tokens=pre[i] + seqs[i],
            prefill_tokens=pre[i],
            prefill_pairs=work.prefill_pairs * p_share,
            prefill_kv_tokens=round(work.prefill_kv_tokens * p_share),
            decode_seqs=seqs[i],
            decode_kv_tokens=round(work.decode_kv_tokens * d_share),
        )
        if mb.tokens:
            out.append(MicroBatch(mb, lg[i]))
    return out


@dataclass(frozen=True)
class LayerPlan:
    """The ops of one transformer layer on one device of a `tp` group."""

    model: ModelSpec
    tp: int
    precision: Precision
    ops: tuple[Op, ...] = field(repr=False)
    weight_bytes: float

    def flops(self, work: Work) -> float:
        return sum(op_flops(op, work) for op in self.ops)

    def bytes(self, work: Work) -> float:
        return sum(op_bytes(op, work, self.precision) for op in self.ops)


def check_tp(model: ModelSpec, tp: int, attention: str = "heads") -> None:
    """Raise if `tp` cannot split this model's heads (when attention is split by heads)
    and MLP evenly."""
    if tp < 1:
        raise LlmsimError(f"tp must be at least 1, got {tp}", key="parallel.tp")
    if attention == "batch":
        if model.d_ff_expert % tp:
            raise LlmsimError(
                f"{tp} does not divide d_ff={model.d_ff_expert} of {model.name}",
                key="parallel.tp",
            )
        return
    if model.n_heads % tp:
        raise LlmsimError(
            f"{tp} does not divide n_heads={model.n_heads} of {model.name}; "
            f"valid tp: {', '.join(str(t) for t in valid_tp(model))}",
            key="parallel.tp",
        )
    kv = model.kv_heads
    if kv % tp and tp % kv:
        raise LlmsimError(
            f"{tp} neither divides nor is a multiple of n_kv_heads={kv} of {model.name}",
            key="parallel.tp",
        )
    if model.d_ff_expert % tp:
        raise LlmsimError(
            f"{tp} does not divide d_ff={model.d_ff_expert} of {model.name}", key="parallel.tp"
        )


def valid_tp(model: ModelSpec, limit: int = 64) -> list[int]:
    out = []
    for t in range(1, limit + 1):
        kv = model.kv_heads
        if model.n_heads % t == 0 and (kv % t == 0 or t % kv == 0) and model.d_ff_expert % t == 0:
            out.append(t)
    return out


@functools.cache
def layer_plan(
    model: ModelSpec, tp: int = 1, precision: Precision = Precision(), attention: str = "heads"
) -> LayerPlan:
    """The per-device ops of one layer under `tp`-way tensor parallelism, attention split
    by heads (Megatron) or by batch (each device: all heads, 1/tp of the sequences)."""
    check_tp(model, tp, attention)
    d, dh = model.d_model, model.head_dim
    by_batch = attention == "batch" and tp > 1
    heads = model.n_heads if by_batch else model.n_heads // tp
    kv_heads = model.kv_heads if by_batch else max(1, model.kv_heads // tp)  # replicated
    share = 1.0 / tp if by_batch else 1.0
    q_local, kv_local = local_widths(model, tp, attention)
    ops: list[Op] = []
    n_norms = 1 if model.parallel_block else 2
    for i in range(n_norms):
        ops.append(
            Op(
                f"norm{'' if i == 0 else '_2'}",
                "elementwise",
                read_elems=d,
                write_elems=d,
                flops_per_token=5 * d,
            )
        )
    ops.append(Op("qkv_proj", "gemm", n=q_local + 2 * kv_local, k=d))
    if model.position == "rotary":
        rot = q_local + kv_local
        ops.append(
            Op("rotary", "elementwise", read_elems=rot, write_elems=rot, flops_per_token=3 * rot)
        )
    ops.append(
        Op("attn_prefill", "attn_prefill", heads=heads, kv_heads=kv_heads, head_dim=dh, share=share)
    )
    ops.append(
        Op("attn_decode", "attn_decode", heads=heads, kv_heads=kv_heads, head_dim=dh, share=share)
    )
    ops.append(Op("o_proj", "gemm", n=d, k=q_local))
    if not model.parallel_block:
        ops.append(
            Op("residual_add", "elementwise", read_elems=2 * d, write_elems=d, flops_per_token=d)
        )
    if tp > 1 and not model.parallel_block:
        ops.append(Op("all_reduce", "all_reduce", elems=d))

    if model.moe is not None:
        moe = model.moe
        ff = model.d_ff_expert // tp
        ops.append(Op("moe_router", "gemm", n=moe.n_experts, k=d))
        if model.mlp == "gated":
            ops.append(Op("mlp_gate", "gemm", n=ff, k=d, count=moe.n_experts, top_k=moe.top_k))
        ops.append(Op("mlp_up", "gemm", n=ff, k=d, count=moe.n_experts, top_k=moe.top_k))
        act_in = (2 if model.mlp == "gated" else 1) * ff * moe.top_k
        ops.append(
            Op(
                "mlp_act",
                "elementwise",
                read_elems=act_in,
                write_elems=ff * moe.top_k,
                flops_per_token=4 * ff * moe.top_k,
            )
        )
        ops.append(Op("mlp_down", "gemm", n=d, k=ff, count=moe.n_experts, top_k=moe.top_k))
        if moe.shared_experts:
            # Every token passes through every shared expert: together one dense MLP
            # `shared_experts` times as wide.
            sff = moe.shared_experts * ff
            if model.mlp == "gated":
                ops.append(Op("shared_gate", "gemm", n=sff, k=d))
            ops.append(Op("shared_up", "gemm", n=sff, k=d))
            ops.append(
                Op(
                    "shared_act",
                    "elementwise",
                    read_elems=(2 if model.mlp == "gated" else 1) * sff,
                    write_elems=sff,
                    flops_per_token=4 * sff,
                )
            )
            ops.append(Op("shared_down", "gemm", n=d, k=sff))
    else:
        ff = model.d_ff // tp
        if model.mlp == "gated":
            ops.append(Op("mlp_gate", "gemm", n=ff, k=d))
        ops.append(Op("mlp_up", "gemm", n=ff, k=d))
        act_in = 2 * ff if model.mlp == "gated" else ff
        ops.append(
            Op("mlp_act", "elementwise", read_elems=act_in, write_elems=ff, flops_per_token=4 * ff)
        )
        ops.append(Op("mlp_down", "gemm", n=d, k=ff))
    ops.append(
        Op("residual_add_2", "elementwise", read_elems=2 * d, write_elems=d, flops_per_token=d)
    )
    if tp > 1:
        ops.append(Op("all_reduce_2", "all_reduce", elems=d))
    plan_ops = tuple(ops)
    weights = layer_weight_elems(model, tp, attention) * precision.w_bytes
    return LayerPlan(model, tp, precision, plan_ops, weights)


def moe_active_experts(count: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts hit when `tokens` tokens each pick `top_k` of `count`
    experts uniformly: count·(1 − (1 − k/count)^tokens)."""
    if count <= 1 or top_k == 0:
        return float(count)
    return count * (1.0 - (1.0 - top_k / count) ** tokens)


def op_flops(op: Op, work: Work) -> float:
    if op.kind == "gemm":
        rows = work.tokens * (op.top_k if op.top_k else 1)
        return 2.0 * rows * op.k * op.n
    if op.kind == "attn_prefill":
        return 4.0 * work.prefill_pairs * op.heads * op.head_dim * op.share
    if op.kind == "attn_decode":
        return 4.0 * work.decode_kv_tokens * op.heads * op.head_dim * op.share
    if op.kind == "elementwise":
        return op.flops_per_token * work.tokens
    return 0.0


def kv_read_bytes_per_token(op: Op, precision: Precision) -> float:
    """KV bytes an attention op reads on this device per token of context (its share
    of the sequences when attention is split by batch)."""
    return 2.0 * op.kv_heads * op.head_dim * precision.kv_bytes * op.share


def op_bytes(op: Op, work: Work, precision: Precision) -> float:
    a, kvb = precision.a_bytes, precision.kv_bytes
    if op.kind == "gemm":
        if work.tokens == 0:
            return 0.0
        matrices = (
            moe_active_experts(op.count, op.top_k, work.tokens) if op.top_k else float(op.count)
        )
        rows = work.tokens * (op.top_k if op.top_k else 1)
        return matrices * op.k * op.n * precision.w_bytes + rows * (op.k + op.n) * a
    if op.kind == "attn_prefill":
        if work.prefill_tokens == 0:
            return 0.0
        q_o = 2 * work.prefill_tokens * op.heads * op.head_dim * a
        kv_read = work.prefill_kv_tokens * 2 * op.kv_heads * op.head_dim * kvb
        kv_write = work.prefill_tokens * 2 * op.kv_heads * op.head_dim * kvb
        return (q_o + kv_read + kv_write) * op.share
    if op.kind == "attn_decode":
        if work.decode_seqs == 0:
            return 0.0
        q_o = 2 * work.decode_seqs * op.heads * op.head_dim * a
        kv_read = work.decode_kv_tokens * 2 * op.kv_heads * op.head_dim * kvb
        kv_write = work.decode_seqs * 2 * op.kv_heads * op.head_dim * kvb
        return (q_o + kv_read + kv_write) * op.share
    if op.kind == "elementwise":
        return (op.read_elems + op.write_elems) * work.tokens * precision.io_bytes
    return 0.0


def dequant_flops(op: Op, work: Work, precision: Precision) -> float:
    """Non-tensor FLOPs of dequantising what the op reads: quantised weights of a matmul
    (activations in floating point), or a quantised KV cache read by attention."""
    if (
        op.kind == "gemm"
        and precision.weights in QUANTISED
        and precision.activations not in (QUANTISED)
    ):
        if work.tokens == 0:
            return 0.0
        matrices = (
            moe_active_experts(op.count, op.top_k, work.tokens) if op.top_k else float(op.count)
        )
        return matrices * op.k * op.n * DEQUANT_FLOPS_PER_VALUE
    if op.kind == "attn_decode" and precision.kv in QUANTISED and work.decode_seqs:
        return (
            work.decode_kv_tokens
            * 2
            * op.kv_heads
            * op.head_dim
            * op.share
            * DEQUANT_FLOPS_PER_VALUE
        )
    if op.kind == "attn_prefill" and precision.kv in QUANTISED and work.prefill_tokens:
        return (
            work.prefill_kv_tokens
            * 2
            * op.kv_heads
            * op.head_dim
            * op.share
            * DEQUANT_FLOPS_PER_VALUE
        )
    return 0.0


def op_active(op: Op, work: Work) -> bool:
    """Whether an op launches a kernel for this work (no decode kernel without decodes)."""
    if op.kind == "attn_prefill":
        return work.prefill_tokens > 0
    if op.kind == "attn_decode":
        return work.decode_seqs > 0
    return work.tokens > 0


def all_reduce_bytes(op: Op, work: Work, precision: Precision) -> float:
    """Payload of one all-reduce: every token's `elems` activations."""
    return op.elems * work.tokens * precision.io_bytes


def lm_head_op(model: ModelSpec, tp: int) -> Op:
    """The LM head on one device: the vocabulary split `tp` ways (rounded up)."""
    return Op("lm_head", "gemm", n=-(-model.vocab_size // tp), k=model.d_model)
