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

Mixtures of experts: a router GEMM (d -> n_experts), the routed experts as GEMMs with
`count` = n_experts and `top_k` (dropless: every token's top_k rows, and the expected
number of distinct experts the batch touches read once each), and the shared experts
as one dense MLP as wide as all of them. With `moe.capacity_factor` set the routed
GEMMs are GShard/Switch-style fixed buffers: each of the n_experts experts multiplies
capacity = ⌈capacity_factor · tokens · top_k / n_experts⌉ rows whether filled or not
(tokens beyond it are dropped, none at uniform load with a factor ≥ 1), so FLOPs are
2 · n_experts · capacity · k · n and every expert's weights are read. A model whose
layers differ (DeepSeek's dense first layers, `moe.layer_freq`) is planned as its mean
layer: an op that only some layers run carries `layer_share` (the fraction of layers
that run it) and its FLOPs and bytes are scaled by it.

Multi-head latent attention (DeepSeek-V2/V3): the Q and K/V down projections (one GEMM
to q_lora_rank + kv_lora_rank + qk_rope_head_dim; replicated under head-split TP), the
Q up projection and the K/V up projection (kv_b: per token it decompresses that
token's K and V in prefill; in decode the same matrix is absorbed, W_UK into the query
and W_UV after attention, the same FLOPs and weights). Prefill attention runs on
decompressed K and V (heads of qk_head_dim for QKᵀ and v_head_dim for PV: head_dim is
their mean, so 4·pairs·heads·head_dim is exact), reads the decompressed K and V,
writes the new tokens' latents and decompresses the cached prefix's latents (their
kv_b FLOPs). Absorbed decode attention runs in the latent space: one shared "K/V head"
of kv_lora_rank + qk_rope_head_dim values read per token of context, QKᵀ over that
width and PV over kv_lora_rank (head_dim = (2·kv_lora_rank + qk_rope_head_dim) / 2).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

from sim.arith.memory import layer_weight_elems, local_widths
from sim.arith.precision import DEQUANT_FLOPS_PER_VALUE, QUANTISED, WEIGHT_ONLY, Precision
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
    `layer_share` < 1: only that fraction of the model's layers runs the op (the MoE
    ops of a model with dense layers, and those dense layers' MLP ops).
    `capacity_factor` > 0: routed experts run fixed capacity buffers (module docstring).
    `kv_width`: cached values per token an attention op reads and writes (0: K and V,
    2·kv_heads·head_dim; MLA: the latent and rotary key). `prefix_flops_per_key`: MLA
    prefill's decompression FLOPs for each cached key it reads.
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
    layer_share: float = 1.0
    capacity_factor: float = 0.0
    kv_width: int = 0
    prefix_flops_per_key: float = 0.0


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
    prefill_max_chunk / prefill_max_pairs: the largest one sequence's prefill chunk and
        the most causal pairs one sequence's chunk has (0 when not known): a sequence
        stays whole on one attention data-parallel rank, so no rank runs less.
    """

    tokens: int = 0
    prefill_tokens: int = 0
    prefill_pairs: float = 0.0
    prefill_kv_tokens: int = 0
    decode_seqs: int = 0
    decode_kv_tokens: int = 0
    prefill_max_chunk: int = 0
    prefill_max_pairs: float = 0.0

    @staticmethod
    def prefill(batch: int, prompt: int, cached: int = 0, window: int | None = None) -> Work:
        """`batch` sequences each prefilling `prompt` tokens after `cached` ones (under a
        sliding `window`, each query attends to at most `window` keys)."""
        pairs = causal_pairs(prompt, cached, window)
        return Work(
            tokens=batch * prompt,
            prefill_tokens=batch * prompt,
            prefill_pairs=batch * pairs,
            prefill_kv_tokens=batch * prefill_keys(prompt, cached, window),
            prefill_max_chunk=prompt if batch else 0,
            prefill_max_pairs=pairs if batch else 0.0,
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
        biggest = min(work.prefill_max_chunk, pre[i])  # a part holds at most its tokens
        mb = Work(
            tokens=pre[i] + seqs[i],
            prefill_tokens=pre[i],
            prefill_pairs=work.prefill_pairs * p_share,
            prefill_kv_tokens=round(work.prefill_kv_tokens * p_share),
            decode_seqs=seqs[i],
            decode_kv_tokens=round(work.decode_kv_tokens * d_share),
            prefill_max_chunk=biggest,
            prefill_max_pairs=(
                work.prefill_max_pairs * biggest / work.prefill_max_chunk
                if work.prefill_max_chunk
                else 0.0
            ),
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


def _mlp_widths(model: ModelSpec) -> list[tuple[str, int]]:
    """(what, width) of every MLP a TP group splits by columns."""
    widths = [("d_ff", model.d_ff)]
    if model.moe is not None:
        expert = "moe.d_ff_expert" if model.moe.d_ff_expert else "d_ff"
        widths = [(expert, model.d_ff_expert)]
        if model.d_ff_shared:
            widths.append(("moe.d_ff_shared", model.d_ff_shared))
        if model.n_dense_layers:
            widths.append(("d_ff", model.d_ff))
    return widths


def check_tp(model: ModelSpec, tp: int, attention: str = "heads") -> None:
    """Raise if `tp` cannot split this model's heads (when attention is split by heads)
    and MLP evenly."""
    if tp < 1:
        raise LlmsimError(f"tp must be at least 1, got {tp}", key="parallel.tp")
    if attention != "batch":
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
    for what, width in _mlp_widths(model):
        if width % tp:
            raise LlmsimError(
                f"{tp} does not divide {what}={width} of {model.name}", key="parallel.tp"
            )


def valid_tp(model: ModelSpec, limit: int = 64) -> list[int]:
    out = []
    for t in range(1, limit + 1):
        kv = model.kv_heads
        if (
            model.n_heads % t == 0
            and (kv % t == 0 or t % kv == 0)
            and all(w % t == 0 for _, w in _mlp_widths(model))
        ):
            out.append(t)
    return out


def _mha_ops(model: ModelSpec, tp: int, attention: str) -> list[Op]:
    """Q/K/V projection, rotary and attention of a multi-head (GQA/MQA) layer."""
    d, dh = model.d_model, model.head_dim
    by_batch = attention == "batch" and tp > 1
    heads = model.n_heads if by_batch else model.n_heads // tp
    kv_heads = model.kv_heads if by_batch else max(1, model.kv_heads // tp)  # replicated
    share = 1.0 / tp if by_batch else 1.0
    q_local, kv_local = local_widths(model, tp, attention)
    ops = [Op("qkv_proj", "gemm", n=q_local + 2 * kv_local, k=d)]
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
    return ops


def _mla_ops(model: ModelSpec, tp: int, attention: str) -> list[Op]:
    """Multi-head latent attention (module docstring): down projections, norms of the
    latents, Q and K/V up projections, rotary, prefill on decompressed K/V, absorbed
    decode over the latent, output projection."""
    assert model.mla is not None
    m, d = model.mla, model.d_model
    by_batch = attention == "batch" and tp > 1
    heads = model.n_heads if by_batch else model.n_heads // tp
    share = 1.0 / tp if by_batch else 1.0
    # Split by batch, every projection is split by columns; by heads, the up and output
    # projections are split by heads and the down projections replicated.
    cols = tp if by_batch else 1
    h_cols = cols  # by heads the heads are already local
    h_proj = model.n_heads if by_batch else model.n_heads // tp
    q_lora = m.q_lora_rank or 0
    ops = [Op("qkv_a_proj", "gemm", n=-(-(q_lora + m.latent_dim) // cols), k=d)]
    normed = q_lora + m.kv_lora_rank
    ops.append(
        Op(
            "latent_norm",
            "elementwise",
            read_elems=normed,
            write_elems=normed,
            flops_per_token=5 * normed,
        )
    )
    if m.q_lora_rank is None:
        ops.append(Op("q_proj", "gemm", n=-(-h_proj * m.qk_head_dim // h_cols), k=d))
    else:
        ops.append(Op("q_b_proj", "gemm", n=-(-h_proj * m.qk_head_dim // h_cols), k=q_lora))
    up = m.qk_nope_head_dim + m.v_head_dim
    ops.append(Op("kv_b_proj", "gemm", n=-(-h_proj * up // h_cols), k=m.kv_lora_rank))
    rot = -(-h_proj * m.qk_rope_head_dim // h_cols) + m.qk_rope_head_dim
    ops.append(
        Op("rotary", "elementwise", read_elems=rot, write_elems=rot, flops_per_token=3 * rot)
    )
    ops.append(
        Op(
            "attn_prefill",
            "attn_prefill",
            heads=heads,
            kv_heads=heads,
            head_dim=(m.qk_head_dim + m.v_head_dim) // 2,
            share=share,
            kv_width=m.latent_dim,
            prefix_flops_per_key=2.0 * m.kv_lora_rank * heads * up,
        )
    )
    ops.append(
        Op(
            "attn_decode",
            "attn_decode",
            heads=heads,
            kv_heads=1,
            head_dim=(2 * m.kv_lora_rank + m.qk_rope_head_dim) // 2,
            share=share,
            kv_width=m.latent_dim,
        )
    )
    ops.append(Op("o_proj", "gemm", n=d, k=-(-h_proj * m.v_head_dim // h_cols)))
    return ops


def _dense_mlp_ops(model: ModelSpec, ff: int, prefix: str, layer_share: float) -> list[Op]:
    d, gated = model.d_model, model.mlp == "gated"
    ops = []
    if gated:
        ops.append(Op(f"{prefix}_gate", "gemm", n=ff, k=d, layer_share=layer_share))
    ops.append(Op(f"{prefix}_up", "gemm", n=ff, k=d, layer_share=layer_share))
    ops.append(
        Op(
            f"{prefix}_act",
            "elementwise",
            read_elems=(2 if gated else 1) * ff,
            write_elems=ff,
            flops_per_token=4 * ff,
            layer_share=layer_share,
        )
    )
    ops.append(Op(f"{prefix}_down", "gemm", n=d, k=ff, layer_share=layer_share))
    return ops


def _moe_ops(model: ModelSpec, tp: int) -> list[Op]:
    """Router, routed experts, shared experts; and the dense MLP of the layers that
    have one, each op carrying the share of layers that run it."""
    assert model.moe is not None
    moe, d, gated = model.moe, model.d_model, model.mlp == "gated"
    ff = model.d_ff_expert // tp
    share = model.n_moe_layers / model.n_layers
    cf = moe.capacity_factor or 0.0
    routed = {"count": moe.n_experts, "top_k": moe.top_k, "capacity_factor": cf}
    ops = [Op("moe_router", "gemm", n=moe.n_experts, k=d, layer_share=share)]
    if gated:
        ops.append(Op("mlp_gate", "gemm", n=ff, k=d, layer_share=share, **routed))  # type: ignore[arg-type]
    ops.append(Op("mlp_up", "gemm", n=ff, k=d, layer_share=share, **routed))  # type: ignore[arg-type]
    ops.append(
        Op(
            "mlp_act",
            "elementwise",
            read_elems=(2 if gated else 1) * ff * moe.top_k,
            write_elems=ff * moe.top_k,
            flops_per_token=4 * ff * moe.top_k,
            layer_share=share,
        )
    )
    ops.append(Op("mlp_down", "gemm", n=d, k=ff, layer_share=share, **routed))  # type: ignore[arg-type]
    if model.d_ff_shared:
        # Every token passes through every shared expert: together one dense MLP as
        # wide as all of them.
        ops += _dense_mlp_ops(model, model.d_ff_shared // tp, "shared", share)
    if model.n_dense_layers:
        ops += _dense_mlp_ops(
            model, model.d_ff // tp, "dense", model.n_dense_layers / model.n_layers
        )
    return ops


@functools.cache
def layer_plan(
    model: ModelSpec, tp: int = 1, precision: Precision = Precision(), attention: str = "heads"
) -> LayerPlan:
    """The per-device ops of one layer under `tp`-way tensor parallelism, attention split
    by heads (Megatron) or by batch (each device: all heads, 1/tp of the sequences)."""
    check_tp(model, tp, attention)
    d = model.d_model
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
    if model.mla is not None:
        ops += _mla_ops(model, tp, attention)
    else:
        ops += _mha_ops(model, tp, attention)
    if not model.parallel_block:
        ops.append(
            Op("residual_add", "elementwise", read_elems=2 * d, write_elems=d, flops_per_token=d)
        )
    if tp > 1 and not model.parallel_block:
        ops.append(Op("all_reduce", "all_reduce", elems=d))

    if model.moe is not None:
        ops += _moe_ops(model, tp)
    else:
        ops += _dense_mlp_ops(model, model.d_ff // tp, "mlp", 1.0)
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


def expert_capacity(op: Op, tokens: int) -> int:
    """Rows each expert's fixed buffer holds: ⌈capacity_factor · tokens · top_k / count⌉."""
    return math.ceil(op.capacity_factor * tokens * op.top_k / op.count)


def gemm_rows(op: Op, tokens: int) -> float:
    """Rows a GEMM multiplies: tokens (dense), tokens · top_k (dropless experts), or
    count · capacity (experts with a capacity factor)."""
    if not op.top_k:
        return float(tokens)
    if op.capacity_factor:
        return float(op.count * expert_capacity(op, tokens))
    return float(tokens * op.top_k)


def gemm_matrices(op: Op, tokens: int) -> float:
    """Weight matrices a GEMM reads: `count`, or the experts the tokens reach (all of
    them under a capacity factor: fixed shapes run every expert)."""
    if not op.top_k or op.capacity_factor:
        return float(op.count)
    return moe_active_experts(op.count, op.top_k, tokens)


def kv_width(op: Op) -> int:
    """Cached values per token of an attention op: K and V of its K/V heads, or MLA's
    latent."""
    return op.kv_width or 2 * op.kv_heads * op.head_dim


def op_flops(op: Op, work: Work) -> float:
    if op.kind == "gemm":
        return 2.0 * gemm_rows(op, work.tokens) * op.k * op.n * op.layer_share
    if op.kind == "attn_prefill":
        flops = 4.0 * work.prefill_pairs * op.heads * op.head_dim
        if op.prefix_flops_per_key:
            flops += (work.prefill_kv_tokens - work.prefill_tokens) * op.prefix_flops_per_key
        return flops * op.share
    if op.kind == "attn_decode":
        return 4.0 * work.decode_kv_tokens * op.heads * op.head_dim * op.share
    if op.kind == "elementwise":
        return op.flops_per_token * work.tokens * op.layer_share
    return 0.0


def kv_read_bytes_per_token(op: Op, precision: Precision) -> float:
    """KV bytes an attention op reads on this device per token of context (its share
    of the sequences when attention is split by batch)."""
    return float(kv_width(op)) * precision.kv_bytes * op.share


def attn_decode_fixed_bytes(op: Op, precision: Precision) -> float:
    """Decode attention's bytes per sequence besides the context it reads: the query
    and output, and the new token's K/V (or latent) written."""
    q_o = 2 * op.heads * op.head_dim * precision.a_bytes
    return (q_o + kv_width(op) * precision.kv_bytes) * op.share


def op_bytes(op: Op, work: Work, precision: Precision) -> float:
    a, kvb = precision.a_bytes, precision.kv_bytes
    if op.kind == "gemm":
        if work.tokens == 0:
            return 0.0
        matrices = gemm_matrices(op, work.tokens)
        rows = gemm_rows(op, work.tokens)
        moved = matrices * op.k * op.n * precision.w_bytes + rows * (op.k + op.n) * a
        return moved * op.layer_share
    if op.kind == "attn_prefill":
        if work.prefill_tokens == 0:
            return 0.0
        q_o = 2 * work.prefill_tokens * op.heads * op.head_dim * a
        kv_read = work.prefill_kv_tokens * 2 * op.kv_heads * op.head_dim * kvb
        kv_write = work.prefill_tokens * kv_width(op) * kvb
        if op.prefix_flops_per_key:  # MLA: the cached prefix's latents, to decompress
            kv_read += (work.prefill_kv_tokens - work.prefill_tokens) * kv_width(op) * kvb
        return (q_o + kv_read + kv_write) * op.share
    if op.kind == "attn_decode":
        if work.decode_seqs == 0:
            return 0.0
        return work.decode_seqs * attn_decode_fixed_bytes(
            op, precision
        ) + work.decode_kv_tokens * kv_read_bytes_per_token(op, precision)
    if op.kind == "elementwise":
        return (op.read_elems + op.write_elems) * work.tokens * precision.io_bytes * op.layer_share
    return 0.0


def dequant_flops(op: Op, work: Work, precision: Precision) -> float:
    """Non-tensor FLOPs of dequantising what the op reads: quantised weights of a matmul
    (activations in floating point), or a quantised KV cache read by attention."""
    if (
        op.kind == "gemm"
        and precision.weights in WEIGHT_ONLY
        and precision.activations not in WEIGHT_ONLY
    ):
        if work.tokens == 0:
            return 0.0
        matrices = gemm_matrices(op, work.tokens)
        return matrices * op.k * op.n * DEQUANT_FLOPS_PER_VALUE * op.layer_share
    if op.kind == "attn_decode" and precision.kv in QUANTISED and work.decode_seqs:
        return work.decode_kv_tokens * kv_width(op) * op.share * DEQUANT_FLOPS_PER_VALUE
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
