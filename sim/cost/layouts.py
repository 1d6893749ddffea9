"""Tensor-parallel layouts (a registry): how one layer's weights and activations are
split over a TP group of n devices, what that costs in collectives per layer, and what
it leaves in each device's memory.

After Pope et al. 2022, "Efficiently Scaling Transformer Inference" (arXiv 2211.05102):
§3.2.1 1D weight-stationary, §3.2.2 2D weight-stationary, §3.2.3 weight-gathered
(X-, XY-, XYZ-weight-gathered; we model the last), §3.3 attention sharded over heads or,
for multiquery models, over the batch. The paper prices a layout by the bytes each
chip exchanges over its interconnect; here the same collectives are priced by
`CollectiveModel` over the group's real topology (ring / tree / NVSwitch one-shot on
GPUs, dimension by dimension on a TPU torus), so link bandwidths, hop latencies and
torus shapes decide the numbers. The formulas below are derived for this module from
the partitionings the paper describes.

Notation: T tokens in a step (the paper's B·L: prefill chunk tokens + one per decoding
sequence), E = d_model, F = d_ff, q = n_heads·d_head, kv = n_kv_heads·d_head, g = 2 for
a gated MLP (gate and up) else 1, a/w the activation/weight bytes, B the per-link
bandwidth, AR/RS/AG/A2A all-reduce / reduce-scatter / all-gather / all-to-all.

- `1d-weight-stationary` (Megatron; §3.2.1): each matrix split once over n — QKV and
  MLP-in by output columns, O and MLP-out by input rows. Per layer 2 × AR(T·E·a), one
  after attention and one after the MLP (1 for a parallel attention+MLP block). A ring
  AR costs 2·T·E·a·(n−1)/n / B: per-chip communication stays about constant in n
  (the paper's observation that it "remains roughly constant").
- `2d-weight-stationary` (§3.2.2): n = X·Y; every matrix split along E over X and along
  F (or heads) over Y. Per block (attention, MLP, or the fused parallel block), with
  `in` the first matmul's output width (q+2kv, g·F, or their sum) and `mid` the second
  matmul's input width (q, F, or their sum):
      AG_Y(T·E/X·a) → matmul → RS_X(T·in/Y·a) → nonlinearity → AG_X(T·mid/Y·a)
      → matmul → RS_Y(T·E/X·a).
  A ring phase of size S over k chips moves S·(k−1)/k, so per chip
      T_comm ≈ T·a/B · (2E·b/X + (in + mid)/Y),  b = blocks,
  minimised at X* = √(n · 2E·b / (in + mid)); then T_comm ∝ 1/√n — for a GPT block
  (in + mid = 12E, 2E·b = 4E) X* = √(n/3) and T_comm ≈ 2·T·a·√(12E·4E)/(B·√n), below
  the 1D cost beyond about 16 chips, as the paper finds. X is taken from the torus
  axes (or powers of two inside a node) nearest X* that divide the shapes.
- `weight-gathered` (XYZ-weight-gathered, §3.2.3): weights stored split over n, but
  all-gathered onto every chip before each layer's matmuls; activations stay on their
  chip, split by batch (tokens), and attention is local to each sequence. Per layer
  one AG(W·w) of the layer's weights W — independent of T, so it wins for large-batch
  prefill (where the 1D all-reduces of T·E·a dwarf W·w) and loses badly at batch 1.
- attention by `batch` (§3.3, multiquery): projections stay split over the group, but
  the attention itself runs per sequence with all heads, so Q/K/V move from head
  sharding to batch sharding and the output moves back: A2A(T·(q+2kv)·a/n) +
  A2A(T·q·a/n) per device (small next to the KV cache reads they save). In the 2D
  layout these run within the Y groups; weight-gathered needs none.

Memory per device (per layer): 1D and 2D hold W/n of the weights (K/V heads replicated
where they are fewer than the devices splitting them); weight-gathered stores W/n and
needs a workspace of one gathered layer (W·w bytes).

Assumptions: communication is not overlapped with compute here (the engine decides
overlap, explicitly); the weight-gathered all-gather is charged in full per layer, not
prefetched under the previous layer's matmuls; the parallel groups of a 2D grid run
their collectives at once on disjoint links, and the slowest sets the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from sim.arith.memory import layer_weight_elems, local_widths
from sim.arith.ops import Work, all_reduce_bytes, check_tp, layer_plan
from sim.arith.params import layer_params, norm_params
from sim.arith.precision import Precision
from sim.cost.collectives import CollectiveModel, CustomAllReduce, Edge, Grid
from sim.cost.topology import Cluster
from sim.errors import LlmsimError, unknown_name
from sim.spec.model import ModelSpec
from sim.spec.profile import CollectiveFit

KEY = "parallel.tp_layout"


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


class Layout:
    """One TP group's layout of a layer. Subclasses set `name` and implement `check`,
    `layer_comm_breakdown` and `weight_elems_per_device`."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        model: ModelSpec,
        tp: int,
        precision: Precision,
        collectives: CollectiveModel,
        attention: str = "heads",
    ):
        self.model = model
        self.tp = tp
        self.precision = precision
        self.collectives = collectives
        self.attention = attention
        self.by_batch = attention == "batch" and tp > 1
        self._comm: dict[int, float] = {}

    @classmethod
    def check(cls, model: ModelSpec, tp: int, attention: str) -> None:
        """Raise LlmsimError if this layout cannot split `model` over `tp` devices."""

    def layer_comm_breakdown(self, tokens: int) -> dict[str, float]:
        """Seconds of each collective of one layer for `tokens` tokens."""
        raise NotImplementedError

    def layer_comm_s(self, tokens: int) -> float:
        """Seconds of one layer's TP communication on the critical path (memoised)."""
        cached = self._comm.get(tokens)
        if cached is None:
            cached = 0.0
            if tokens > 0 and self.tp > 1:
                cached = sum(self.layer_comm_breakdown(tokens).values())
            self._comm[tokens] = cached
        return cached

    def links(self) -> tuple[Edge, ...]:
        """Directed links these collectives occupy."""
        return self.collectives.links()

    def weight_elems_per_device(self) -> float:
        """Weight elements one device stores for one layer."""
        raise NotImplementedError

    def workspace_bytes(self) -> float:
        """Transient per-device bytes the layout needs beyond activations."""
        return 0.0

    # shared -----------------------------------------------------------------------
    def _attention_a2a_s(self, tokens: int, group: CollectiveModel, share: int) -> float:
        """Q/K/V from head sharding to batch sharding and the output back, for a
        device that holds 1/`share` of the projections' outputs of `tokens` tokens."""
        m, a = self.model, self.precision.io_bytes
        qkv = tokens * (m.q_dim + 2 * m.kv_dim) * a / share
        out = tokens * m.q_dim * a / share
        return group.all_to_all_s(qkv) + group.all_to_all_s(out)


LAYOUTS: dict[str, type[Layout]] = {}


def register(cls: type[Layout]) -> type[Layout]:
    LAYOUTS[cls.name] = cls
    return cls


@register
class WeightStationary1D(Layout):
    """Megatron: one all-reduce of T·E activations after attention and after the MLP."""

    name = "1d-weight-stationary"

    @classmethod
    def check(cls, model: ModelSpec, tp: int, attention: str) -> None:
        try:
            check_tp(model, tp, attention)
        except LlmsimError as exc:
            raise LlmsimError(f"{cls.name}: {exc.message}", key=KEY) from None

    def __init__(
        self,
        model: ModelSpec,
        tp: int,
        precision: Precision,
        collectives: CollectiveModel,
        attention: str = "heads",
    ):
        super().__init__(model, tp, precision, collectives, attention)
        plan = layer_plan(model, tp, precision, attention)
        self._reduces = [op for op in plan.ops if op.kind == "all_reduce"]

    def layer_comm_breakdown(self, tokens: int) -> dict[str, float]:
        col, work = self.collectives, Work(tokens=tokens)
        out = {
            "all_reduce": sum(
                col.all_reduce_s(all_reduce_bytes(op, work, self.precision)) for op in self._reduces
            )
        }
        if self.by_batch:
            out["all_to_all"] = self._attention_a2a_s(tokens, col, self.tp)
        return out

    def weight_elems_per_device(self) -> float:
        return layer_weight_elems(self.model, self.tp, self.attention)


@register
class WeightStationary2D(Layout):
    """Weights split over an X × Y grid: E over X, F and heads over Y."""

    name = "2d-weight-stationary"

    @classmethod
    def check(cls, model: ModelSpec, tp: int, attention: str) -> None:
        if model.moe is not None:
            raise LlmsimError(
                f"{cls.name} splits dense layers; {model.name} is a mixture of experts "
                "(use 1d-weight-stationary)",
                key=KEY,
            )
        pairs = [(x, tp // x) for x in range(2, tp // 2 + 1) if tp % x == 0]
        if not pairs:
            raise LlmsimError(
                f"{cls.name} needs tp to factor into two axes X·Y with X, Y ≥ 2; tp={tp} does not",
                key=KEY,
            )
        if not grid_xs(model, tp, attention):
            need = f"X | d_model={model.d_model}, Y | d_ff={model.d_ff}"
            if attention != "batch":
                need += (
                    f", Y | n_heads={model.n_heads} and Y divides or is a multiple of "
                    f"n_kv_heads={model.kv_heads}"
                )
            tried = ", ".join(f"{x}x{y}" for x, y in pairs)
            raise LlmsimError(
                f"{cls.name}: no grid X·Y = {tp} of {model.name} has {need} (tried {tried})",
                key=KEY,
            )

    def __init__(
        self,
        model: ModelSpec,
        tp: int,
        precision: Precision,
        collectives: CollectiveModel,
        attention: str = "heads",
    ):
        super().__init__(model, tp, precision, collectives, attention)
        valid = grid_xs(model, tp, attention)
        on_topology = [x for x in collectives.grid_sizes() if x in valid]
        target = self.best_x()
        self.x = min(on_topology or valid, key=lambda x: (abs(math.log(x / target)), x))
        self.y = tp // self.x
        self.grid: Grid = collectives.axis_groups(self.x)
        self._rows = _distinct(self.grid.x_groups)
        self._cols = _distinct(self.grid.y_groups)

    # widths per token on one device: (in, mid) of each block, E/X -------------------
    def _local_widths(self, y: int) -> tuple[int, int]:
        return local_widths(self.model, y, "batch" if self.by_batch else "heads")

    def blocks(self, y: int) -> list[tuple[int, int]]:
        """(in, mid) widths per device of each block between an AG_Y and an RS_Y."""
        m = self.model
        q, kv = self._local_widths(y)
        ff = m.d_ff // y
        gate = 2 if m.mlp == "gated" else 1
        if m.parallel_block:
            return [(q + 2 * kv + gate * ff, q + ff)]
        return [(q + 2 * kv, q), (gate * ff, ff)]

    def best_x(self) -> float:
        """X* = √(n·2E·b / Σ(in + mid)) minimises T·(2E·b/X + Σ(in + mid)/Y)."""
        full = self.blocks(1)
        width = sum(i + mid for i, mid in full)
        return math.sqrt(self.tp * 2 * self.model.d_model * len(full) / width)

    def layer_comm_breakdown(self, tokens: int) -> dict[str, float]:
        a = self.precision.io_bytes
        rows, cols = self._rows, self._cols
        e_x = tokens * (self.model.d_model // self.x) * a
        out = {"all_gather_y": 0.0, "reduce_scatter_x": 0.0, "all_gather_x": 0.0}
        out["reduce_scatter_y"] = 0.0
        for width_in, width_mid in self.blocks(self.y):
            out["all_gather_y"] += max(g.all_gather_s(e_x) for g in cols)
            out["reduce_scatter_x"] += max(g.reduce_scatter_s(tokens * width_in * a) for g in rows)
            out["all_gather_x"] += max(g.all_gather_s(tokens * width_mid * a) for g in rows)
            out["reduce_scatter_y"] += max(g.reduce_scatter_s(e_x) for g in cols)
        if self.by_batch:
            # After RS_X a device holds T/X tokens' Q/K/V for 1/Y of the heads.
            out["all_to_all"] = max(self._attention_a2a_s(tokens, g, self.tp) for g in cols)
        return out

    def links(self) -> tuple[Edge, ...]:
        groups = (*self.grid.x_groups, *self.grid.y_groups)
        return tuple(sorted({e for g in groups for e in g.links()}))

    def weight_elems_per_device(self) -> float:
        m, x = self.model, self.x
        d_x = _ceil(m.d_model, x)
        q, kv = self._local_widths(self.y)
        attn = d_x * (q + 2 * kv) + q * d_x
        if m.has_qkv_bias:
            attn += _ceil(q + 2 * kv, x)
        if m.bias:
            attn += d_x
        ff = m.d_ff // self.y
        mats = 3 if m.mlp == "gated" else 2
        mlp = mats * d_x * ff + ((mats - 1) * _ceil(ff, x) + d_x if m.bias else 0)
        n_norms = 1 if m.parallel_block else 2
        return float(attn + mlp + n_norms * norm_params(m))


@register
class WeightGathered(Layout):
    """XYZ-weight-gathered: the layer's weights are all-gathered onto every chip, the
    activations stay where they are (split by batch)."""

    name = "weight-gathered"

    def layer_comm_breakdown(self, tokens: int) -> dict[str, float]:
        gathered = layer_params(self.model) * self.precision.w_bytes
        return {"all_gather_weights": self.collectives.all_gather_s(gathered)}

    def weight_elems_per_device(self) -> float:
        return layer_params(self.model) / self.tp

    def workspace_bytes(self) -> float:
        return layer_params(self.model) * self.precision.w_bytes if self.tp > 1 else 0.0


def _distinct(groups: Sequence[CollectiveModel]) -> tuple[CollectiveModel, ...]:
    """One group per distinct cost: the parallel rows (or columns) of a grid are
    usually translates of each other on a torus or inside a node, so pricing one of
    each kind keeps `layer_comm_s` cheap for any token count."""
    seen: dict[tuple[float, ...], CollectiveModel] = {}
    for g in groups:
        key = tuple(
            round(f(size), 15)
            for f in (g.all_gather_s, g.reduce_scatter_s, g.all_to_all_s)
            for size in (1e2, 1e6, 1e10)
        )
        seen.setdefault(key, g)
    return tuple(seen.values())


# ---------------------------------------------------------------------------- API


def grid_xs(model: ModelSpec, tp: int, attention: str) -> list[int]:
    """X sizes of the X × Y = tp grids (X, Y ≥ 2) that split `model` evenly: X divides
    d_model, Y divides d_ff and, with attention by heads, the heads."""
    out = []
    for x in range(2, tp // 2 + 1):
        if tp % x:
            continue
        y = tp // x
        if model.d_model % x or model.d_ff % y:
            continue
        kv = model.kv_heads
        if attention != "batch" and (model.n_heads % y or (kv % y and y % kv)):
            continue
        out.append(x)
    return out


def check_layout(name: str, model: ModelSpec, tp: int, attention: str = "heads") -> None:
    """Raise LlmsimError(key="parallel.tp_layout") if layout `name` cannot split
    `model` over `tp` devices with attention by `attention`."""
    cls = LAYOUTS.get(name)
    if cls is None:
        raise unknown_name("tp_layout", name, LAYOUTS).at(key_prefix=KEY)
    if attention not in ("heads", "batch"):
        raise LlmsimError(f"attention must be 'heads' or 'batch', got {attention!r}", key=KEY)
    if tp < 1:
        raise LlmsimError(f"tp must be at least 1, got {tp}", key=KEY)
    cls.check(model, tp, attention)


def build_layout(
    name: str,
    model: ModelSpec,
    tp: int,
    precision: Precision,
    cluster: Cluster,
    devices: tuple[int, ...],
    fits: Sequence[CollectiveFit] = (),
    attention: str = "heads",
    custom: CustomAllReduce | None = None,
) -> Layout:
    """The layout `name` of one TP group on `devices` of `cluster`, its collectives
    priced over the topology (and by the calibrated `fits` where they apply; small
    all-reduces by the runtime's own kernel, `custom`, where it has one)."""
    check_layout(name, model, tp, attention)
    if len(devices) != tp:
        raise LlmsimError(f"a TP group of {tp} got {len(devices)} devices", key=KEY)
    group = CollectiveModel(cluster, devices, fits, custom)
    return LAYOUTS[name](model, tp, precision, group, attention)


def layout_weights(
    name: str, model: ModelSpec, tp: int, precision: Precision, attention: str = "heads"
) -> tuple[float, float]:
    """(weight bytes one device keeps per layer, extra transient bytes per device): the
    weights are split `tp` ways under every layout; weight-gathered also needs room for
    one whole gathered layer while it computes."""
    per_layer = layer_weight_elems(model, tp, compute_attention(name, model, tp, attention))
    workspace = 0.0
    if name == WeightGathered.name and tp > 1:
        workspace = layer_weight_elems(model, 1) * precision.w_bytes
    return per_layer * precision.w_bytes, workspace


def compute_attention(name: str, model: ModelSpec, tp: int, attention: str) -> str:
    """How the compute plan splits attention: as asked, except that layouts other than
    1D, whose head split need not divide the heads over all `tp` devices, price
    attention as an even share of the sequences when the heads do not divide."""
    if name != WeightStationary1D.name and attention == "heads" and model.n_heads % tp:
        return "batch"
    return attention
