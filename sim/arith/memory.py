"""Memory per device: weights, KV cache and activation workspace, in closed form.

Weights: what one device of a `tp`-way Megatron group holds of a layer (heads split,
K/V heads replicated when there are fewer than devices; MLP columns/rows split; norms
replicated), plus the vocabulary-parallel embedding and LM head on the first and last
pipeline stages. KV cache: 2 (K and V) · n_layers · n_kv_heads · d_head · bytes per
token (4·l·d in bf16 for MHA), capped by a sliding window; with multi-head latent
attention n_layers · (kv_lora_rank + qk_rope_head_dim) · bytes, the latent every head
shares (kept whole on every device of a head-split TP group, as vLLM and SGLang do).
MLA under head-split TP replicates the Q and K/V down projections (small, and what
every head needs) and splits the up and output projections by heads. An MoE model's
layer weights are those of its mean layer (dense and MoE layers averaged).
Activations: a profile-free stand-in for the peak transient tensors of one forward pass.
"""

from __future__ import annotations

from sim.arith.params import attention_params, norm_params
from sim.arith.precision import Precision, kv_value_bytes
from sim.errors import LlmsimError
from sim.spec.model import ModelSpec


def layers_per_stage(n_layers: int, pp: int) -> list[int]:
    """Layers of each pipeline stage, split as evenly as possible (earlier stages take
    the remainder)."""
    if pp < 1:
        raise LlmsimError(f"pp must be at least 1, got {pp}", key="parallel.pp")
    if pp > n_layers:
        raise LlmsimError(
            f"{pp} pipeline stages exceed the model's {n_layers} layers", key="parallel.pp"
        )
    base, extra = divmod(n_layers, pp)
    return [base + (1 if i < extra else 0) for i in range(pp)]


def local_widths(model: ModelSpec, n: int, attention: str = "heads") -> tuple[int, int]:
    """(Q, K/V) projection widths on one of `n` devices: whole heads each (K/V heads
    replicated below one a device), or, with attention split by batch, an even 1/n of
    the projection columns."""
    if attention == "batch":
        return -(-model.q_dim // n), -(-model.kv_dim // n)
    dh = model.head_dim
    return model.n_heads // n * dh, max(1, model.kv_heads // n) * dh


def attention_weight_elems(model: ModelSpec, tp: int, attention: str = "heads") -> float:
    """Attention weight elements one device of a `tp` group holds for one layer."""
    d = model.d_model
    if model.mla is not None:
        m = model.mla
        if attention == "batch":
            return attention_params(model) / tp
        h = model.n_heads // tp
        down = d * m.latent_dim + m.kv_lora_rank  # replicated: K/V down projection and norm
        if m.q_lora_rank is None:
            q = d * h * m.qk_head_dim
        else:
            down += d * m.q_lora_rank + m.q_lora_rank
            q = m.q_lora_rank * h * m.qk_head_dim
        up = m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim)
        return float(down + q + up + h * m.v_head_dim * d)
    q_local, kv_local = local_widths(model, tp, attention)
    attn = d * (q_local + 2 * kv_local) + q_local * d
    if model.has_qkv_bias:
        attn += q_local + 2 * kv_local
    if model.bias:
        attn += d
    return float(attn)


def layer_weight_elems(model: ModelSpec, tp: int, attention: str = "heads") -> float:
    """Weight elements one device of a `tp` group holds for one (mean) layer (K/V heads
    are replicated when split by heads over more devices than there are K/V heads)."""
    d = model.d_model
    mats = 3 if model.mlp == "gated" else 2
    ff = model.d_ff // tp
    dense = mats * d * ff + ((mats - 1) * ff + d if model.bias else 0)
    if model.moe is not None:
        moe = model.moe.n_experts * mats * d * (model.d_ff_expert // tp)
        moe += mats * d * (model.d_ff_shared // tp) + d * model.moe.n_experts
        if model.n_dense_layers:
            mlp = (model.n_moe_layers * moe + model.n_dense_layers * dense) / model.n_layers
        else:
            mlp = moe
    else:
        mlp = dense
    n_norms = 1 if model.parallel_block else 2
    return float(attention_weight_elems(model, tp, attention) + mlp + n_norms * norm_params(model))


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


def weight_bytes_per_device(model: ModelSpec, tp: int, pp: int, precision: Precision) -> float:
    """Weights held by the most loaded device (largest stage plus its embedding share)."""
    stages = layers_per_stage(model.n_layers, pp)
    per_layer, emb = layer_weight_elems(model, tp), embedding_weight_elems(model, tp)
    return max(stage_weights(stages, per_layer, emb, model.tied_embeddings)) * precision.w_bytes


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
    one device). MLA: the whole latent on every device, or 1/tp of it split by batch."""
    size = kv_value_bytes(kv_dtype)
    if model.mla is not None:
        return layers * model.mla.latent_dim * size / (tp if attention == "batch" else 1)
    if attention == "batch" and tp > 1:
        return 2.0 * layers * model.kv_dim * size / tp
    return 2.0 * layers * max(1, model.kv_heads // tp) * model.head_dim * size


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str | Precision = "bf16") -> float:
    """2 (K and V) · n_layers · n_kv_heads · d_head · bytes: 4·l·d in bf16 for MHA; MLA
    n_layers · (kv_lora_rank + qk_rope_head_dim) · bytes."""
    return float(model.n_layers * model.kv_values_per_token * kv_value_bytes(kv_dtype))


def kv_bytes_peak(
    model: ModelSpec, batch: int, prompt: int, output: int, kv_dtype: str | Precision = "bf16"
) -> float:
    """bytes · 2 · b · l · h · (s + n): the KV cache at the end of generation."""
    return batch * model.kv_tokens_kept(prompt + output) * kv_bytes_per_token(model, kv_dtype)


def activation_workspace_bytes(
    model: ModelSpec, tokens: int, tp: int, precision: Precision
) -> float:
    """Peak transient activations of one forward pass over `tokens` tokens on one device:
    the residual stream and the widest intermediate (QKV or MLP), plus fp32 logits for
    the sequences that sample. A profile-free stand-in for vLLM's measured peak."""
    dh = model.head_dim
    qkv = (model.n_heads // tp + 2 * max(1, model.kv_heads // tp)) * dh
    if model.mla is not None:  # decompressed per-head Q, K, V
        m = model.mla
        qkv = model.n_heads // tp * (2 * m.qk_head_dim + m.v_head_dim)
    ff = model.d_ff_expert // tp
    mlp = (2 if model.mlp == "gated" or model.moe else 1) * ff
    widest = max(qkv, mlp + ff)
    per_token = (3 * model.d_model + widest) * precision.a_bytes
    logits = min(tokens, 256) * model.vocab_size / tp * 4.0
    return tokens * per_token + logits
