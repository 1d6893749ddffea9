"""Expert parallelism and attention data parallelism for a mixture of experts (the way
DeepSeek and SGLang serve it): where the experts live, how unevenly tokens load them,
what one device computes of a layer, and the all-to-alls that move the tokens.

A stage has D = tp × dp devices: `dp` attention ranks of `tp` devices each. A rank runs
attention, the router, shared experts and norms for its share of the step's sequences
(1/dp, the slowest rank's ⌈T/dp⌉ tokens), split over its tp devices as Megatron splits
them. The routed experts spread over `ep` groups of m = D/ep devices: a group holds
(n_experts + redundant)/ep experts at full width split m ways (m = 1: whole experts).

Per layer, with T tokens in the step, k = top_k, E = d_model, a the activation bytes:
- ep > 1: the attention output is reduce-scattered inside each rank (each device then
  owns ⌈T/D⌉ tokens), every owned token is dispatched to its k experts' m devices and
  the partial outputs combined back — two all-to-alls over the D devices of
  S = ⌈T/D⌉·k·m·E·a·λ bytes a device (λ = max/mean load: the hottest device's port
  carries λ times the mean), priced over every pair's route by `CollectiveModel.
  all_to_all_routed_s` — then all-gathered inside each rank (tp > 1). The slowest
  expert group computes ⌈T·k·λ/ep⌉ rows over its experts.
- ep = 1, dp > 1: experts split D ways; every device needs every token, so the ranks'
  tokens are all-gathered over the D devices before the MoE and reduce-scattered after.

Load: expert popularity p_i is Zipf (p_i ∝ (i+1)^−s, expert 0 the hottest) or a
measured histogram; experts sit on groups in id order, n/ep each. A group's load is the
sum of its experts' p_i; λ = ep · max load (1 when uniform). EPLB (`redundant` > 0)
gives the hottest experts an extra copy each (repeatedly, one at a time, to whichever
expert then carries the most per copy), the copies sharing its load, and places the
(n + redundant) copies on the groups by longest-processing-time first.

Two-batch overlap: the step splits into micro-batches A and B; per layer A's compute
overlaps B's communication and the other way round, so L layers take
c_A + L·max(c_B, m_A) + (L−1)·max(c_A, m_B) + m_B (the first compute and the last
communication are the unhidden part), instead of L·(c + m).

Assumptions: the ranks hold equal shares of the sequences; the router's choices are
independent of a token's rank; the all-to-alls do not overlap compute unless two-batch
overlap is on; the weight reads of the slowest group are those of the distinct local
experts its rows touch (uniformly among them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from sim.arith.ops import LayerPlan, Op
from sim.arith.precision import Precision
from sim.cost.collectives import CollectiveModel, Edge
from sim.errors import LlmsimError
from sim.spec.model import ModelSpec

KEY = "parallel"


def popularity(
    n_experts: int, skew: float = 0.0, histogram: Sequence[float] | None = None
) -> tuple[float, ...]:
    """Each expert's share of the routed tokens (summing to 1): the measured
    `histogram` normalised, or Zipf with exponent `skew` (0: uniform)."""
    if histogram is not None:
        if len(histogram) != n_experts:
            raise LlmsimError(
                f"gives {len(histogram)} counts for {n_experts} experts",
                key="parallel.experts.histogram",
            )
        total = float(sum(histogram))
        return tuple(h / total for h in histogram)
    weights = [(i + 1) ** -skew for i in range(n_experts)]
    total = sum(weights)
    return tuple(w / total for w in weights)


def group_loads(shares: Sequence[float], ep: int, redundant: int = 0) -> tuple[float, ...]:
    """Each expert group's share of the routed tokens. Without redundant experts, group
    g holds experts g·n/ep … (g+1)·n/ep − 1; with them (EPLB), the hottest experts get
    copies and every copy is placed longest-first on the least-loaded group that has a
    free slot."""
    n = len(shares)
    if redundant == 0:
        per = n // ep
        return tuple(sum(shares[g * per : (g + 1) * per]) for g in range(ep))
    copies = [1] * n
    for _ in range(redundant):  # the expert carrying the most per copy gets one more
        hottest = max(range(n), key=lambda i: (shares[i] / copies[i], -i))
        copies[hottest] += 1
    items = sorted(
        ((shares[i] / copies[i], i) for i in range(n) for _ in range(copies[i])),
        key=lambda x: (-x[0], x[1]),
    )
    slots = (n + redundant) // ep
    loads = [0.0] * ep
    used = [0] * ep
    for load, _ in items:
        g = min((g for g in range(ep) if used[g] < slots), key=lambda g: (loads[g], g))
        loads[g] += load
        used[g] += 1
    return tuple(loads)


def imbalance(loads: Sequence[float]) -> float:
    """max/mean of the groups' loads: how much longer the slowest group works."""
    return max(loads) * len(loads) / sum(loads)


def _is_expert_op(op: Op, model: ModelSpec) -> bool:
    return op.top_k > 0 or (op.name == "mlp_act" and model.moe is not None)


class ExpertParallel:
    """One stage's expert-parallel (and attention data-parallel) group: the ops one
    device runs, the tokens it runs them on, and the layer's communication."""

    def __init__(
        self,
        plan: LayerPlan,
        precision: Precision,
        *,
        dp: int,
        ep: int,
        redundant: int,
        balance: float,
        group: CollectiveModel,
        ranks: Sequence[CollectiveModel],
        overlap: bool = False,
        dispatch_bytes: float | None = None,
    ):
        model = plan.model
        assert model.moe is not None
        self.model = model
        self.tp = plan.tp
        self.dp = dp
        self.ep = ep
        self.devices = plan.tp * dp
        self.width_split = self.devices // ep  # m: devices one expert is split over
        self.local_experts = (model.moe.n_experts + redundant) // ep
        self.top_k = model.moe.top_k
        self.imbalance = balance
        self.precision = precision
        self.group = group  # all D devices
        self.ranks = tuple(ranks)  # each attention rank's tp devices
        self.overlap = overlap
        # bytes per value the dispatch sends (None: the activations'; DeepEP sends fp8)
        self.dispatch_bytes = dispatch_bytes
        # the share of layers that route (DeepSeek's first dense layers have no experts)
        self.moe_share = model.n_moe_layers / model.n_layers
        ff_tp = model.d_ff_expert // plan.tp
        ff = model.d_ff_expert // self.width_split
        dense, experts = [], []
        for op in plan.ops:
            if not _is_expert_op(op, model):
                if op.kind in ("attn_prefill", "attn_decode") and dp > 1:
                    op = replace(op, share=op.share / dp)
                dense.append(op)
            elif op.kind == "gemm":
                # One matrix per local expert, priced over the rows that reach them.
                shape = (ff, op.k) if op.k == model.d_model else (op.n, ff)
                experts.append(
                    replace(op, n=shape[0], k=shape[1], count=self.local_experts, top_k=1)
                )
            else:  # the activation between them, per routed row
                scale = ff / ff_tp / max(op.top_k, self.top_k)
                experts.append(
                    replace(
                        op,
                        read_elems=op.read_elems * scale,
                        write_elems=op.write_elems * scale,
                        flops_per_token=op.flops_per_token * scale,
                    )
                )
        self.dense_ops = tuple(dense)
        self.expert_ops = tuple(experts)
        self._comm: dict[int, float] = {}

    # tokens ------------------------------------------------------------------------
    def rank_tokens(self, tokens: int, biggest: int = 0) -> int:
        """Tokens the slowest attention rank runs: its even share, and at least the
        `biggest` one sequence brings (a sequence stays whole on one rank)."""
        return max(-(-tokens // self.dp), min(biggest, tokens))

    def expert_rows(self, tokens: int) -> int:
        """Routed rows the slowest expert group computes: ⌈T·k·λ/ep⌉."""
        if tokens <= 0:
            return 0
        return math.ceil(tokens * self.top_k * self.imbalance / self.ep - 1e-9)

    # communication -----------------------------------------------------------------
    def layer_comm_breakdown(self, tokens: int) -> dict[str, float]:
        """Seconds of each collective of one layer for a step of `tokens` tokens."""
        if tokens <= 0:
            return {}
        a, e = self.precision.io_bytes, self.model.d_model
        rank = self.rank_tokens(tokens) * e * a
        out: dict[str, float] = {}
        if self.tp > 1:
            out["attention_all_reduce"] = max(g.all_reduce_s(rank) for g in self.ranks)
        share = self.moe_share
        if self.ep == 1:  # experts split over all D devices: every device needs every token
            out["all_gather"] = share * self.group.all_gather_s(tokens * e * a)
            out["reduce_scatter"] = share * self.group.reduce_scatter_s(tokens * e * a)
            return out
        if self.tp > 1:  # the attention output is reduce-scattered, not all-reduced
            out["attention_all_reduce"] = max(g.reduce_scatter_s(rank) for g in self.ranks)
            out["all_gather"] = max(g.all_gather_s(rank) for g in self.ranks)
        owned = -(-tokens // self.devices)
        values = owned * self.top_k * self.width_split * e * self.imbalance
        sent = self.dispatch_bytes if self.dispatch_bytes is not None else a
        out["dispatch"] = share * self.group.all_to_all_routed_s(values * sent)
        out["combine"] = share * self.group.all_to_all_routed_s(values * a)
        return out

    def layer_comm_s(self, tokens: int) -> float:
        cached = self._comm.get(tokens)
        if cached is None:
            cached = self._comm[tokens] = sum(self.layer_comm_breakdown(tokens).values())
        return cached

    def links(self) -> tuple[Edge, ...]:
        """Directed links the layer's collectives cross."""
        edges: set[Edge] = set()
        for g in self.ranks:
            edges.update(g.links())
        if self.ep > 1:
            edges.update(self.group.all_to_all_links())
        else:
            edges.update(self.group.links())
        return tuple(sorted(edges))

    def key(self) -> tuple[float, ...]:
        """Stages whose communication costs the same share one StageCost."""
        return (self.layer_comm_s(1), self.layer_comm_s(1024))


def expert_weight_elems(model: ModelSpec, tp: int, ep: int, dp: int, redundant: int) -> float:
    """Routed-expert weight elements one device holds per (mean) layer under expert
    parallelism, minus what a plain `tp` split would have held there (add to
    `layer_weight_elems`)."""
    moe = model.moe
    assert moe is not None
    mats = 3 if model.mlp == "gated" else 2
    plain = moe.n_experts * mats * model.d_model * (model.d_ff_expert // tp)
    split = tp * dp // ep
    local = (moe.n_experts + redundant) // ep
    delta = local * mats * model.d_model * (model.d_ff_expert // split) - plain
    if model.n_dense_layers:  # a mean layer, as `layer_weight_elems` counts it
        return delta * model.n_moe_layers / model.n_layers
    return delta
