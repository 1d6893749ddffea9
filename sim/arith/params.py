"""Parameter and FLOP counts of a model, in closed form (the seeds' arithmetic).

A plain MHA block holds 12d² + 13d parameters (4d² attention, 8d² MLP, biases and two
layer norms); in general 4h² + 2h·h_ff for h-wide attention and an h_ff-wide MLP, with
GQA/MQA shrinking K and V and gated MLPs adding a third matrix. One token through a
layer costs 2 FLOPs per weight it meets (24d² for a GPT block at context 0: 6d² QKV,
2d² output projection, 16d² FFN) plus 4·context·n_heads·d_head of attention.

Mixtures of experts: an MoE layer holds n_experts routed experts, the shared experts
and a d × n_experts router; a token meets top_k routed experts, every shared one and
the router. Dense layers of an MoE model (DeepSeek's first three) hold a d_ff MLP.
Multi-head latent attention (DeepSeek-V2/V3) holds the Q down/up projections (or one
full-rank Q projection), the joint K/V down projection to the latent and the shared
rotary key, the K/V up projection, the output projection and two RMSNorm vectors.
"""

from __future__ import annotations

from sim.spec.model import ModelSpec


def norm_params(model: ModelSpec) -> int:
    return 2 * model.d_model if model.norm == "layernorm" else model.d_model


def _mla_matrices(model: ModelSpec) -> tuple[int, int, int]:
    """MLA's projection weights of one layer: (Q down and up, K/V down and up, output)."""
    m, h, d = model.mla, model.n_heads, model.d_model
    assert m is not None
    if m.q_lora_rank is None:
        q = d * h * m.qk_head_dim
    else:
        q = d * m.q_lora_rank + m.q_lora_rank * h * m.qk_head_dim
    kv = d * m.latent_dim + m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim)
    return q, kv, h * m.v_head_dim * d


def attention_params(model: ModelSpec) -> int:
    d = model.d_model
    if model.mla is not None:
        q, kv, o = _mla_matrices(model)
        m = model.mla
        # the RMSNorms on the Q and K/V latents
        return q + kv + o + (m.q_lora_rank or 0) + m.kv_lora_rank
    params = d * model.q_dim + 2 * d * model.kv_dim + model.q_dim * d
    if model.has_qkv_bias:
        params += model.q_dim + 2 * model.kv_dim
    if model.bias:
        params += d
    return params


def _mats(model: ModelSpec) -> int:
    return 3 if model.mlp == "gated" else 2


def dense_mlp_params(model: ModelSpec) -> int:
    """The MLP of a dense layer (d_ff wide)."""
    mats = _mats(model)
    params = mats * model.d_model * model.d_ff
    if model.bias:
        params += (mats - 1) * model.d_ff + model.d_model
    return params


def expert_params(model: ModelSpec) -> int:
    """One routed expert."""
    return _mats(model) * model.d_model * model.d_ff_expert


def moe_mlp_params(model: ModelSpec) -> int:
    """The MLP of an MoE layer: routed experts, shared experts and the router."""
    assert model.moe is not None
    d = model.d_model
    shared = _mats(model) * d * model.d_ff_shared
    return model.moe.n_experts * expert_params(model) + shared + d * model.moe.n_experts


def mlp_params(model: ModelSpec) -> float:
    """MLP parameters of the mean layer (of the one layer kind a model has, exactly)."""
    if model.moe is None:
        return dense_mlp_params(model)
    total = model.n_moe_layers * moe_mlp_params(model)
    total += model.n_dense_layers * dense_mlp_params(model)
    return total / model.n_layers


def layer_params(model: ModelSpec) -> float:
    """Parameters of the mean transformer layer: 12d² + 13d for a GPT-style MHA block."""
    return non_embedding_params(model) / model.n_layers


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
    n_norms = 1 if model.parallel_block else 2
    per_layer = attention_params(model) + n_norms * norm_params(model)
    if model.moe is None:
        return model.n_layers * (per_layer + dense_mlp_params(model))
    return (
        model.n_layers * per_layer
        + model.n_moe_layers * moe_mlp_params(model)
        + model.n_dense_layers * dense_mlp_params(model)
    )


def total_params(model: ModelSpec) -> int:
    return non_embedding_params(model) + embedding_params(model) + norm_params(model)


def active_params(model: ModelSpec) -> int:
    """Parameters a token touches (MoE: top_k of the routed experts in each MoE layer,
    every shared expert and the router)."""
    if model.moe is None:
        return total_params(model)
    inactive = (model.moe.n_experts - model.moe.top_k) * expert_params(model)
    return total_params(model) - model.n_moe_layers * inactive


def attention_proj_flops_per_token(model: ModelSpec) -> tuple[float, float]:
    """(Q/K/V projections, output projection) FLOPs of one token in one layer. MLA: the
    Q down/up projections, the K/V down projection and the K/V up projection of the
    token's own latent (K and V decompressed)."""
    d = model.d_model
    if model.mla is not None:
        q, kv, o = _mla_matrices(model)
        return 2.0 * (q + kv), 2.0 * o
    return 2.0 * d * (model.q_dim + 2 * model.kv_dim), 2.0 * model.q_dim * d


def attention_flops_per_key(model: ModelSpec) -> float:
    """QKᵀ and PV FLOPs of one query against one key in one layer: 4·n_heads·d_head, or
    for MLA with K/V decompressed 2·n_heads·(qk_head_dim + v_head_dim)."""
    if model.mla is not None:
        return 2.0 * model.n_heads * (model.mla.qk_head_dim + model.mla.v_head_dim)
    return 4.0 * model.q_dim


def flops_per_token(model: ModelSpec, context: int = 0) -> dict[str, float]:
    """Forward FLOPs of one token through all layers, split by op, at a KV `context`.

    At context 0 a GPT block gives 24d² per layer: 6d² QKV, 2d² output projection,
    16d² FFN. Attention (QKᵀ and PV) adds 4·context·n_heads·d_head per layer. MoE
    layers count top_k routed experts, the shared ones and the router; dense layers of
    an MoE model their d_ff MLP.
    """
    d, layers = model.d_model, model.n_layers
    kept = model.kv_tokens_kept(context)
    mats = _mats(model)
    dense_ffn = 2.0 * mats * d * model.d_ff
    if model.moe is not None:
        moe = model.moe
        width = moe.top_k * model.d_ff_expert + model.d_ff_shared
        moe_ffn = 2.0 * mats * d * width + 2.0 * d * moe.n_experts
        ffn = model.n_moe_layers * moe_ffn + model.n_dense_layers * dense_ffn
    else:
        ffn = dense_ffn * layers
    qkv, o_proj = attention_proj_flops_per_token(model)
    return {
        "qkv": qkv * layers,
        "attention": kept * attention_flops_per_key(model) * layers,
        "o_proj": o_proj * layers,
        "ffn": ffn,
    }


def lm_head_flops_per_token(model: ModelSpec) -> float:
    return 0.0 if model.encoder_only else 2.0 * model.d_model * model.vocab_size
