"""Speculative-decoding methods: what proposes the k tokens a verification step checks,
what it costs a step and what it keeps in device memory.

A method is one small class registered by name (`@SPECULATORS.register("eagle")`); the
spec checks the name against the registry. Each says what it adds to a device's memory
(`memory`: weight bytes and KV bytes per token) and builds the `StageCost` of one
proposal pass (`draft_cost`; None when proposing costs the devices nothing), which
`sim.cost.stage.Speculation` runs k times a step:

- draft: a smaller model of its own `ModelSpec` on the same TP group and cost kernel;
  its weights and its KV cache (one entry per token, as the target's) share the devices.
- eagle / mtp: one extra decoder layer of the target's shape with the target's LM head
  (EAGLE's feature-level head; DeepSeek-V3's multi-token-prediction module, whose
  embedding and head are shared with the target): one layer of weights and of KV.
- ngram: prompt lookup on the host: no weights, no KV, no device time.

Speculation runs on a replica of one pipeline stage, colocated, with a paged KV cache
and a batching policy that bounds its running sequences (`max_num_seqs`): those are the
sequences for which k lookahead KV slots are set aside (`lookahead_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sim.arith.memory import (
    embedding_weight_elems,
    kv_bytes_per_token_per_device,
    stage_weights,
)
from sim.arith.ops import layer_plan
from sim.arith.precision import Precision
from sim.cost.collectives import CustomAllReduce
from sim.cost.layouts import build_layout, compute_attention, layout_weights
from sim.cost.roofline import OpKernel
from sim.cost.stage import Speculation, StageCost
from sim.cost.topology import Cluster
from sim.registry import SPECULATORS
from sim.spec.model import ModelSpec
from sim.spec.profile import CollectiveFit
from sim.spec.scenario import Scenario


@dataclass(frozen=True)
class DraftMemory:
    """What a method keeps on each device of the stage."""

    weight_bytes: float
    kv_bytes_per_token: float


@dataclass(frozen=True)
class Where:
    """The stage a proposal pass runs on: its cost kernel and its TP group."""

    kernel: OpKernel
    cluster: Cluster
    devices: tuple[int, ...]
    fits: Sequence[CollectiveFit]
    custom: CustomAllReduce | None


def pass_cost(s: Scenario, model: ModelSpec, layers: int, at: Where, whole: bool) -> StageCost:
    """`layers` layers of `model` on the stage's TP group, under the scenario's layout and
    runtime: a whole model (`whole`: embedding and LM head), or layers and the LM head."""
    par = s.parallel
    attention = compute_attention(par.tp_layout, model, par.tp, par.attention)
    precision = at.kernel.precision
    plan = layer_plan(model, par.tp, precision, attention)
    layout = None
    if par.tp > 1:
        layout = build_layout(
            par.tp_layout,
            model,
            par.tp,
            precision,
            at.cluster,
            at.devices,
            at.fits,
            par.attention,
            at.custom,
        )
    return StageCost(plan, layers, at.kernel, layout, first=whole, last=True, runtime=s.runtime)


class Method:
    """A proposer that costs nothing on the devices (the base of the others)."""

    def memory(self, s: Scenario, precision: Precision) -> DraftMemory:
        return DraftMemory(0.0, 0.0)

    def draft_cost(self, s: Scenario, at: Where) -> StageCost | None:
        return None


@SPECULATORS.register("ngram")
class NGram(Method):
    """Prompt lookup (vLLM's `ngram`): proposals copied from earlier tokens by the host."""


@SPECULATORS.register("draft")
class DraftModel(Method):
    """A separate draft model, every layer of it, priced as the target is."""

    @staticmethod
    def _model(s: Scenario) -> ModelSpec:
        assert s.speculative is not None and s.speculative.draft_model is not None
        return s.speculative.draft_model

    def memory(self, s: Scenario, precision: Precision) -> DraftMemory:
        model, par = self._model(s), s.parallel
        layer_w, _ = layout_weights(par.tp_layout, model, par.tp, precision, par.attention)
        emb = embedding_weight_elems(model, par.tp) * precision.w_bytes
        weights = stage_weights([model.n_layers], layer_w, emb, model.tied_embeddings)[0]
        attention = compute_attention(par.tp_layout, model, par.tp, par.attention)
        kv = kv_bytes_per_token_per_device(model, par.tp, model.n_layers, precision, attention)
        return DraftMemory(weights, kv)

    def draft_cost(self, s: Scenario, at: Where) -> StageCost | None:
        model = self._model(s)
        return pass_cost(s, model, model.n_layers, at, whole=True)


class Head(Method):
    """One decoder layer of the target's shape and the target's (shared) LM head."""

    def memory(self, s: Scenario, precision: Precision) -> DraftMemory:
        model, par = s.model, s.parallel
        layer_w, _ = layout_weights(par.tp_layout, model, par.tp, precision, par.attention)
        attention = compute_attention(par.tp_layout, model, par.tp, par.attention)
        kv = kv_bytes_per_token_per_device(model, par.tp, 1, precision, attention)
        return DraftMemory(layer_w, kv)

    def draft_cost(self, s: Scenario, at: Where) -> StageCost | None:
        return pass_cost(s, s.model, 1, at, whole=False)


SPECULATORS.register("eagle")(Head)
SPECULATORS.register("mtp")(Head)


def draft_memory(s: Scenario, precision: Precision) -> DraftMemory:
    """What the scenario's speculation keeps on each device (nothing without one)."""
    if s.speculative is None:
        return DraftMemory(0.0, 0.0)
    method: Method = SPECULATORS[s.speculative.method]()
    return method.memory(s, precision)


def lookahead_blocks(s: Scenario) -> int:
    """KV blocks set aside so that every running sequence can write the k + 1 tokens a
    verification step appends before the rejected ones are dropped: k tokens beyond
    its current block, for each of the policy's `max_num_seqs` sequences."""
    if s.speculative is None:
        return 0
    params = s.scheduler.policy_params()
    bs = params.block_size
    return int(params.max_num_seqs) * -(-s.speculative.k // bs)


def speculation(s: Scenario, at: Where) -> Speculation | None:
    """The scenario's speculation on the stage `at` (None without one)."""
    spec = s.speculative
    if spec is None:
        return None
    method: Method = SPECULATORS[spec.method]()
    return Speculation(spec.k, spec.expected_tokens, method.draft_cost(s, at))
