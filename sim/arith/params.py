"""Parameter and FLOP counts of a model, in closed form (the seeds' arithmetic).

A plain MHA block holds 12d² + 13d parameters (4d² attention, 8d² MLP, biases and two
layer norms); in general 4h² + 2h·h_ff for h-wide attention and an h_ff-wide MLP, with
GQA/MQA shrinking K and V and gated MLPs adding a third matrix. One token through a
layer costs 2 FLOPs per weight it meets (24d² for a GPT block at context 0: 6d² QKV,
2d² output projection, 16d² FFN) plus 4·context·n_heads·d_head of attention.
"""

from __future__ import annotations

from sim.spec.model import ModelSpec


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


def flops_per_token(model: ModelSpec, context: int = 0) -> dict[str, float]:
    """Forward FLOPs of one token through all layers, split by op, at a KV `context`.

    At context 0 a GPT block gives 24d² per layer: 6d² QKV, 2d² output projection,
    16d² FFN. Attention (QKᵀ and PV) adds 4·context·n_heads·d_head per layer.
    """
    d, layers = model.d_model, model.n_layers
    kept = model.kv_tokens_kept(context)
    if model.moe is not None:
        mats = 3 if model.mlp == "gated" else 2
        experts = model.moe.top_k + model.moe.shared_experts  # every token meets the shared ones
        ffn = 2.0 * experts * mats * d * model.d_ff_expert + 2.0 * d * model.moe.n_experts
    else:
        ffn = 2.0 * (3 if model.mlp == "gated" else 2) * d * model.d_ff
    split = {
        "qkv": 2.0 * d * (model.q_dim + 2 * model.kv_dim) * layers,
        "attention": 4.0 * kept * model.q_dim * layers,
        "o_proj": 2.0 * model.q_dim * d * layers,
        "ffn": ffn * layers,
    }
    return split


def lm_head_flops_per_token(model: ModelSpec) -> float:
    return 0.0 if model.encoder_only else 2.0 * model.d_model * model.vocab_size
