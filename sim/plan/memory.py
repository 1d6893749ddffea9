"""The memory budget of a replica's devices: weights, activation workspace, and the KV
cache in what is left.

A device may use `gpu_memory_utilization` of its memory (vLLM's default 0.9). After its
share of the weights (its stage's layers under the TP layout, plus the embedding or LM
head on the first and last stages) and the activation workspace of the largest step,
the rest holds KV blocks of `block_size` tokens; a replica's KV capacity is what its
most KV-loaded device can hold. A model that leaves no room is an error saying what
would fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.arith.memory import (
    activation_workspace_bytes,
    embedding_weight_elems,
    kv_bytes_per_token_per_device,
    layer_weight_elems,
    layers_per_stage,
    stage_weights,
)
from sim.arith.ops import valid_tp
from sim.arith.precision import Precision
from sim.cost.experts import expert_weight_elems
from sim.cost.layouts import layout_weights
from sim.cost.roofline import OpKernel
from sim.cost.topology import Cluster
from sim.plan.experts import uses_experts
from sim.plan.layers import plan_attention, stage_layers
from sim.plan.offload import offload_capacity
from sim.plan.speculative import draft_memory, lookahead_blocks
from sim.spec.scenario import Scenario


@dataclass(frozen=True)
class MemoryPlan:
    """Sizes shared by every replica of a scenario."""

    stages: list[int]  # layers per stage
    weight_bytes: list[float]  # per device, per stage
    workspace_bytes: float
    kv_bytes_per_token: list[float]  # per device, per stage
    blocks: int  # KV blocks of a whole replica
    block_bytes: float  # of the most KV-loaded stage's device


def plan_memory(
    s: Scenario, cluster: Cluster, precision: Precision, kernel: OpKernel | None = None
) -> MemoryPlan:
    model, par = s.model, s.parallel
    params = s.scheduler.policy_params()
    stages = stage_layers(s, kernel)
    layer_w, layout_workspace = layout_weights(
        par.tp_layout, model, par.tp, precision, par.attention
    )
    if uses_experts(s):  # the routed experts as the expert groups hold them
        extra = expert_weight_elems(model, par.tp, par.ep, par.dp_attention, par.experts.redundant)
        layer_w += extra * precision.w_bytes
    emb = embedding_weight_elems(model, par.tp) * precision.w_bytes
    weights = stage_weights(stages, layer_w, emb, model.tied_embeddings)
    cap = params.step_token_cap(params.max_model_len or model.max_seq_len)
    workspace = activation_workspace_bytes(model, cap, par.tp, precision) + layout_workspace
    attention = plan_attention(s)
    per_token = [
        kv_bytes_per_token_per_device(model, par.tp, n, precision, attention) for n in stages
    ]
    if par.dp_attention > 1:  # a rank keeps the KV of its own sequences only
        per_token = [t / par.dp_attention for t in per_token]
    usable = cluster.device.memory_bytes * params.gpu_memory_utilization
    bs = params.block_size
    if s.speculative is not None:  # the draft's weights and KV share the (one) stage's devices
        draft = draft_memory(s, precision)
        weights = [w + draft.weight_bytes for w in weights]
        per_token = [t + draft.kv_bytes_per_token for t in per_token]
    if s.offload is not None:  # tiers are checked by the offload plan; KV may live anywhere
        # weight_bytes then holds everything the placement keeps on the GPU at its peak.
        gpu = offload_capacity(s, cluster, precision)
        weights = [gpu]
        blocks = (1 << 40) // bs
        return MemoryPlan(stages, weights, 0.0, per_token, blocks, bs * max(per_token))
    blocks = min(
        math.floor((usable - w - workspace) / (bs * t))
        for w, t in zip(weights, per_token, strict=True)
    )
    blocks -= lookahead_blocks(s)  # room for the k tokens each sequence's verification writes
    if blocks <= 0:
        worst = max(weights)
        need = worst + workspace
        raise s.error(
            f"{model.name} does not fit: a device needs {need / 1e9:.1f} GB for weights "
            f"({worst / 1e9:.1f} GB) and activations ({workspace / 1e9:.1f} GB) before any KV "
            f"cache, but {cluster.device.name} offers {usable / 1e9:.1f} GB "
            f"({params.gpu_memory_utilization:.0%} of {cluster.device.memory_bytes / 1e9:.0f} GB); "
            + _what_would_fit(s, usable, precision),
            "parallel",
        )
    return MemoryPlan(stages, weights, workspace, per_token, blocks, bs * max(per_token))


def _what_would_fit(s: Scenario, usable: float, precision: Precision) -> str:
    """A suggestion: the smallest tensor-parallel degree whose weights leave room."""
    model = s.model
    for tp in valid_tp(model, limit=64):
        if tp <= s.parallel.tp:
            continue
        stages = layers_per_stage(model.n_layers, s.parallel.pp)
        per_layer, emb = layer_weight_elems(model, tp), embedding_weight_elems(model, tp)
        weights = max(stage_weights(stages, per_layer, emb, model.tied_embeddings))
        if weights * precision.w_bytes < 0.9 * usable:
            return f"tp={tp} would leave room for KV cache (or raise pp, or shrink the dtype)"
    return "raise pp, use more devices, or a smaller weight dtype"
