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

from sim.errors import LlmsimError
from sim.spec.model import ModelSpec
from sim.units import dtype_bytes


@dataclass(frozen=True)
class Precision:
    """Separate dtypes for weights, activations and the KV cache. Matmuls run at the
    activation dtype (weight-only int8/int4 dequantise on the fly)."""

    weights: str = "bf16"
    activations: str = "bf16"
    kv: str = "bf16"
    group_size: int = 64  # int8/int4 values share an fp16 scale and zero per group
    w_bytes: float = field(init=False, repr=False, compare=False)
    a_bytes: float = field(init=False, repr=False, compare=False)
    kv_bytes: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = []
        for role in ("weights", "activations", "kv"):
            try:
                sizes.append(dtype_bytes(getattr(self, role)))
            except ValueError as exc:
                raise LlmsimError(str(exc), key=f"precision.{role}") from None
        if self.group_size < 1:
            raise LlmsimError("must be at least 1", key="precision.group_size")
        # Group-wise quantised values carry 4 bytes (fp16 scale and zero) per group.
        overhead = 4.0 / self.group_size
        if self.weights in QUANTISED:
            sizes[0] += overhead
        if self.kv in QUANTISED:
            sizes[2] += overhead
        # Byte sizes are read on the hot path: resolve them once.
        object.__setattr__(self, "w_bytes", sizes[0])
        object.__setattr__(self, "a_bytes", sizes[1])
        object.__setattr__(self, "kv_bytes", sizes[2])

    @property
    def compute_dtype(self) -> str:
        return self.activations


QUANTISED = ("int8", "int4")
# Dequantising one int8/int4 value (unpack, subtract the zero, scale) on the general-
# purpose cores, not the matrix units: the cost FlexGen and gpt-fast pay for compression.
DEQUANT_FLOPS_PER_VALUE = 4.0

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


def causal_pairs(chunk: int, done: int) -> float:
    """Causal (query, key) pairs of a `chunk` of queries after `done` cached tokens."""
    return chunk * done + chunk * (chunk + 1) / 2


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
    def prefill(batch: int, prompt: int, cached: int = 0) -> Work:
        """`batch` sequences each prefilling `prompt` tokens after `cached` ones."""
        return Work(
            tokens=batch * prompt,
            prefill_tokens=batch * prompt,
            prefill_pairs=batch * causal_pairs(prompt, cached),
            prefill_kv_tokens=batch * (cached + prompt),
        )

    @staticmethod
    def decode(batch: int, context: int) -> Work:
        """`batch` sequences each generating one token against `context` cached ones."""
        return Work(tokens=batch, decode_seqs=batch, decode_kv_tokens=batch * context)


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


# --------------------------------------------------------------------------- per op


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
        return (op.read_elems + op.write_elems) * work.tokens * a
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
    return op.elems * work.tokens * precision.a_bytes


# ----------------------------------------------------------------------- closed forms


def norm_params(model: ModelSpec) -> int:
    return 2 * model.d_model if model.norm == "layernorm" else model.d_model


def attention_params(model: ModelSpec) -> int:
    d = model.d_model
    params = d * model.q_dim + 2 * d * model.kv_dim + model.q_dim * d
    if model.has_qkv_bias:
        params += model.q_dim + 2 * model.kv_dim
    if model.bias:
        params += d
    return params


def mlp_params(model: ModelSpec) -> int:
    d = model.d_model
    if model.moe is not None:
        ff = model.d_ff_expert
        per_expert = (3 if model.mlp == "gated" else 2) * d * ff
        experts = model.moe.n_experts + model.moe.shared_experts
        return experts * per_expert + d * model.moe.n_experts
    ff = model.d_ff
    mats = 3 if model.mlp == "gated" else 2
    params = mats * d * ff
    if model.bias:
        params += (mats - 1) * ff + d
    return params


def layer_params(model: ModelSpec) -> int:
    """Parameters of one transformer layer: 12d² + 13d for a GPT-style MHA block."""
    n_norms = 1 if model.parallel_block else 2
    return attention_params(model) + mlp_params(model) + n_norms * norm_params(model)


def embedding_params(model: ModelSpec) -> int:
    d = model.d_model
    params = model.vocab_size * d
    if model.position == "learned":
        params += model.max_seq_len * d
    if not model.tied_embeddings and not model.encoder_only:
        params += model.vocab_size * d
    return params


def non_embedding_params(model: ModelSpec) -> int:
    """Parameters of the transformer layers alone (the seeds' count)."""
    return model.n_layers * layer_params(model)


def total_params(model: ModelSpec) -> int:
    return non_embedding_params(model) + embedding_params(model) + norm_params(model)


def active_params(model: ModelSpec) -> int:
    """Parameters a token touches (MoE: top_k of the experts)."""
    if model.moe is None:
        return total_params(model)
    d, ff = model.d_model, model.d_ff_expert
    mats = 3 if model.mlp == "gated" else 2
    inactive = (model.moe.n_experts - model.moe.top_k) * mats * d * ff
    return total_params(model) - model.n_layers * inactive


def local_widths(model: ModelSpec, n: int, attention: str = "heads") -> tuple[int, int]:
    """(Q, K/V) projection widths on one of `n` devices: whole heads each (K/V heads
    replicated below one a device), or, with attention split by batch, an even 1/n of
    the projection columns."""
    if attention == "batch":
        return -(-model.q_dim // n), -(-model.kv_dim // n)
    dh = model.head_dim
    return model.n_heads // n * dh, max(1, model.kv_heads // n) * dh


def layer_weight_elems(model: ModelSpec, tp: int, attention: str = "heads") -> float:
    """Weight elements one device of a `tp` group holds for one layer (K/V heads are
    replicated when split by heads over more devices than there are K/V heads)."""
    d = model.d_model
    q_local, kv_local = local_widths(model, tp, attention)
    attn = d * (q_local + 2 * kv_local) + q_local * d
    if model.has_qkv_bias:
        attn += q_local + 2 * kv_local
    if model.bias:
        attn += d
    if model.moe is not None:
        ff = model.d_ff_expert // tp
        mats = 3 if model.mlp == "gated" else 2
        mlp = (model.moe.n_experts + model.moe.shared_experts) * mats * d * ff
        mlp += d * model.moe.n_experts
    else:
        ff = model.d_ff // tp
        mats = 3 if model.mlp == "gated" else 2
        mlp = mats * d * ff + ((mats - 1) * ff + d if model.bias else 0)
    n_norms = 1 if model.parallel_block else 2
    return float(attn + mlp + n_norms * norm_params(model))


def embedding_weight_elems(model: ModelSpec, tp: int) -> float:
    """Embedding and LM-head elements per device (vocab-parallel over `tp`)."""
    d = model.d_model
    elems = model.vocab_size * d / tp
    if model.position == "learned":
        elems += model.max_seq_len * d
    if not model.tied_embeddings and not model.encoder_only:
        elems += model.vocab_size * d / tp
    return elems + norm_params(model)


def stage_weights(stages: list[int], per_layer: float, embedding: float, tied: bool) -> list[float]:
    """Weights of each pipeline stage's device (any unit): its layers, plus the embedding
    on the first stage and the LM head on the last — halves of `embedding` (one device's
    embedding and LM head together), or the whole of it on both when the two are one
    tied matrix."""
    out = []
    for i, layers in enumerate(stages):
        w = layers * per_layer
        if len(stages) == 1:
            w += embedding
        elif i == 0 or i == len(stages) - 1:
            w += embedding / 2 if not tied else embedding
        out.append(w)
    return out


def kv_value_bytes(kv: str | Precision) -> float:
    """Bytes of one cached K or V value: a dtype's size, or a precision's (whose
    group-wise quantised KV also carries its scales and zeros)."""
    return kv.kv_bytes if isinstance(kv, Precision) else dtype_bytes(kv)


def kv_bytes_per_token_per_device(
    model: ModelSpec,
    tp: int,
    layers: int,
    kv_dtype: str | Precision = "bf16",
    attention: str = "heads",
) -> float:
    """KV bytes one device of a TP group keeps per token of the batch, for `layers`
    layers: its K/V heads when attention is split by heads (replicated below one head a
    device), or 1/tp of every token's K/V when split by batch (whole sequences live on
    one device)."""
    size = kv_value_bytes(kv_dtype)
    if attention == "batch" and tp > 1:
        return 2.0 * layers * model.kv_dim * size / tp
    return 2.0 * layers * max(1, model.kv_heads // tp) * model.head_dim * size


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str | Precision = "bf16") -> float:
    """2 (K and V) · n_layers · n_kv_heads · d_head · bytes: 4·l·d in bf16 for MHA."""
    return 2.0 * model.n_layers * model.kv_dim * kv_value_bytes(kv_dtype)


def kv_tokens_kept(model: ModelSpec, context: int) -> int:
    """Tokens of KV a sequence keeps: the whole context, or the sliding window."""
    if model.sliding_window is not None:
        return min(context, model.sliding_window)
    return context


def kv_bytes_peak(
    model: ModelSpec, batch: int, prompt: int, output: int, kv_dtype: str | Precision = "bf16"
) -> float:
    """bytes · 2 · b · l · h · (s + n): the KV cache at the end of generation."""
    return batch * kv_tokens_kept(model, prompt + output) * kv_bytes_per_token(model, kv_dtype)


def flops_per_token(model: ModelSpec, context: int = 0) -> dict[str, float]:
    """Forward FLOPs of one token through all layers, split by op, at a KV `context`.

    At context 0 a GPT block gives 24d² per layer: 6d² QKV, 2d² output projection,
    16d² FFN. Attention (QKᵀ and PV) adds 4·context·n_heads·d_head per layer.
    """
    d, layers = model.d_model, model.n_layers
    kept = kv_tokens_kept(model, context)
    if model.moe is not None:
        mats = 3 if model.mlp == "gated" else 2
        ffn = 2.0 * model.moe.top_k * mats * d * model.d_ff_expert + 2.0 * d * model.moe.n_experts
    else:
        ffn = 2.0 * (3 if model.mlp == "gated" else 2) * d * model.d_ff
    split = {
        "qkv": 2.0 * d * (model.q_dim + 2 * model.kv_dim) * layers,
        "attention": 4.0 * kept * model.q_dim * layers,
        "o_proj": 2.0 * model.q_dim * d * layers,
        "ffn": ffn * layers,
    }
    return split


def lm_head_op(model: ModelSpec, tp: int) -> Op:
    """The LM head on one device: the vocabulary split `tp` ways (rounded up)."""
    return Op("lm_head", "gemm", n=-(-model.vocab_size // tp), k=model.d_model)


def lm_head_flops_per_token(model: ModelSpec) -> float:
    return 0.0 if model.encoder_only else 2.0 * model.d_model * model.vocab_size


def activation_workspace_bytes(
    model: ModelSpec, tokens: int, tp: int, precision: Precision
) -> float:
    """Peak transient activations of one forward pass over `tokens` tokens on one device:
    the residual stream and the widest intermediate (QKV or MLP), plus fp32 logits for
    the sequences that sample. A profile-free stand-in for vLLM's measured peak."""
    dh = model.head_dim
    qkv = (model.n_heads // tp + 2 * max(1, model.kv_heads // tp)) * dh
    ff = model.d_ff_expert // tp
    mlp = (2 if model.mlp == "gated" or model.moe else 1) * ff
    widest = max(qkv, mlp + ff)
    per_token = (3 * model.d_model + widest) * precision.a_bytes
    logits = min(tokens, 256) * model.vocab_size / tp * 4.0
    return tokens * per_token + logits
