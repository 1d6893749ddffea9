"""The price of one pipeline stage for one micro-batch: the hot path of the engine.

A stage is a TP group holding a block of layers (plus the embedding on the first stage
and the LM head on the last). Its time for a `Work` is n_layers × (the layer's ops on
one device + its TP collectives) + the extras. The part that depends only on the token
count (matmuls, element-wise ops, the TP layout's collectives) is memoised by token
count; the attention parts are a few float operations each, so an iteration costs O(1)
however many sequences it holds. `decode_times` prices k consecutive decode steps at
once with numpy, for the engine's leaps over quiet stretches.

The runtime (sim.spec.runtime) shapes the price:
- eager kernels pay their launch: the kernel's own (measured or the device's), or, when
  the runtime names a `kernel_launch`, the longer of the kernel's execution and that
  launch (a stream of short kernels is as fast as Python can launch them);
- a step that replays a CUDA graph (decode steps up to the captured batch; any step
  with `graphs.mixed`) pays no per-kernel launch, runs the batch padded to the next
  captured size, and pays one graph launch;
- fused element-wise ops cost nothing of their own;
- a weight-gathered layer whose all-gathers overlap compute takes the longer of the two.
Execution never goes below the physical roofline of an op.
"""

from __future__ import annotations

import bisect

import numpy as np

from sim.arith.ops import (
    LayerPlan,
    Op,
    Work,
    kv_read_bytes_per_token,
    lm_head_op,
    op_active,
    op_bytes,
    op_flops,
)
from sim.cost.layouts import Layout, WeightGathered
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.spec.runtime import RuntimeSpec

BARE = RuntimeSpec()


class StageCost:
    def __init__(
        self,
        plan: LayerPlan,
        n_layers: int,
        kernel: OpKernel,
        layout: Layout | None,
        *,
        first: bool = True,
        last: bool = True,
        runtime: RuntimeSpec = BARE,
    ):
        self.plan = plan
        self.n_layers = n_layers
        self.kernel = kernel
        self.layout = layout  # the TP group's communication (None without TP)
        self.first = first
        self.last = last
        self.runtime = runtime
        model = plan.model
        fused = set(runtime.fused)
        self._all_token_ops = [o for o in plan.ops if o.kind in ("gemm", "elementwise")]
        self._token_ops = [o for o in self._all_token_ops if o.name not in fused]
        self._prefill = next(o for o in plan.ops if o.kind == "attn_prefill")
        self._decode = next(o for o in plan.ops if o.kind == "attn_decode")
        self._lm_head = lm_head_op(model, plan.tp)
        self._samples = last and not model.encoder_only  # runs the LM head
        self._embed = Op(
            "embedding", "elementwise", read_elems=model.d_model, write_elems=model.d_model
        )
        self._floor = RooflineKernel(kernel.device, kernel.precision, ideal=True)
        self._launch = runtime.kernel_launch_s  # None: the kernel's own launch
        self._captured = runtime.graphs.captured()
        graph_launch = runtime.graphs.launch_s
        self._graph_launch = (
            kernel.device.launch_overhead_s if graph_launch is None else graph_launch
        )
        self._graph_mixed = runtime.graphs.mixed
        self._graph_pads = runtime.graphs.padding
        self._overlap_gather = runtime.overlap_weight_gather and isinstance(layout, WeightGathered)
        self._per_token: dict[tuple[int, bool], float] = {}
        self._flops_per_token: dict[int, float] = {}
        self._bytes_per_token: dict[int, float] = {}
        self._lm: dict[tuple[int, bool], float] = {}

    # ------------------------------------------------------------------ one op
    def op_s(self, op: Op, work: Work, graph: bool = False) -> float:
        """One op on one device: eager (launch paid as the runtime says) or inside a
        CUDA graph (no launch); never below the op's physical roofline."""
        t = self.kernel.op_time(op, work)
        launch = self._launch
        if (not graph and launch is None) or t <= 0.0 or not op_active(op, work):
            return t
        exec_s = max(t - self.kernel.launch_part(op, work), self._floor.op_time(op, work))
        return exec_s if graph or launch is None else max(exec_s, launch)

    # ------------------------------------------------------------------ graphs
    def graph_size(self, work: Work) -> int | None:
        """The captured batch a step replays (its tokens padded up), or None: eager."""
        if not self._captured:
            return None
        if work.prefill_tokens and not self._graph_mixed:
            return None
        if not self._graph_pads:  # a program for every shape
            if work.tokens <= self._captured[-1] or (self._graph_mixed and work.prefill_tokens):
                return work.tokens
            return None
        if work.tokens > self._captured[-1]:
            return work.tokens if self._graph_mixed and work.prefill_tokens else None
        return self._captured[bisect.bisect_left(self._captured, work.tokens)]

    # ------------------------------------------------------------------ components
    def token_part_s(self, tokens: int, graph: bool = False) -> float:
        """Matmuls, element-wise ops and collectives of all layers for `tokens`."""
        key = (tokens, graph)
        cached = self._per_token.get(key)
        if cached is not None:
            return cached
        work = Work(tokens=tokens)
        layer = sum(self.op_s(op, work, graph) for op in self._token_ops)
        if self.layout is not None and tokens:
            comm = self.layout.layer_comm_s(tokens)
            layer = max(layer, comm) if self._overlap_gather else layer + comm
        total = layer * self.n_layers
        if self.first and tokens:
            total += self.op_s(self._embed, work, graph)
        self._per_token[key] = total
        return total

    def comm_part_s(self, tokens: int) -> float:
        """The TP communication share of `token_part_s` (time the links are busy)."""
        if self.layout is None or not tokens:
            return 0.0
        return self.layout.layer_comm_s(tokens) * self.n_layers

    def lm_head_s(self, rows: int, graph: bool = False) -> float:
        if not self._samples or rows <= 0:
            return 0.0
        key = (rows, graph)
        cached = self._lm.get(key)
        if cached is None:
            cached = self.op_s(self._lm_head, Work(tokens=rows), graph)
            self._lm[key] = cached
        return cached

    def attention_s(self, work: Work, graph: bool = False) -> float:
        t = 0.0
        if work.prefill_tokens:
            t += self.op_s(self._prefill, work, graph)
        if work.decode_seqs:
            t += self.op_s(self._decode, work, graph)
        return t * self.n_layers

    # ------------------------------------------------------------------ the stage
    def time(self, work: Work, logits: int) -> float:
        """Seconds for this stage to run `work`, sampling `logits` sequences."""
        size = self.graph_size(work)
        if size is None:
            return self.token_part_s(work.tokens) + self.attention_s(work) + self.lm_head_s(logits)
        pad = size - work.tokens
        return (
            self.token_part_s(size, True)
            + self.attention_s(work, True)
            + self.lm_head_s(logits + pad if logits else 0, True)
            + self._graph_launch
        )

    def flops(self, work: Work, logits: int) -> float:
        """Model FLOPs of this stage on one device (for MFU)."""
        per_tok = self._flops_per_token.get(work.tokens)
        if per_tok is None:
            per_tok = sum(op_flops(op, work) for op in self._all_token_ops) * self.n_layers
            self._flops_per_token[work.tokens] = per_tok
        attn = (op_flops(self._prefill, work) + op_flops(self._decode, work)) * self.n_layers
        lm = op_flops(self._lm_head, Work(tokens=logits)) if self._samples else 0.0
        return per_tok + attn + lm

    def bytes(self, work: Work) -> float:
        """HBM bytes this stage moves on one device (for bandwidth utilisation); fused
        element-wise ops move nothing of their own."""
        p = self.plan.precision
        per_tok = self._bytes_per_token.get(work.tokens)
        if per_tok is None:
            per_tok = sum(op_bytes(op, work, p) for op in self._token_ops) * self.n_layers
            self._bytes_per_token[work.tokens] = per_tok
        attn = op_bytes(self._prefill, work, p) + op_bytes(self._decode, work, p)
        return per_tok + attn * self.n_layers

    def decode_flops(self, seqs: int, kv0: int, growth: int, steps: int) -> float:
        """Model FLOPs of `steps` decode steps (see `decode_times`), per device."""
        kv_total = steps * kv0 + growth * steps * (steps - 1) / 2
        fixed = self.flops(Work(tokens=seqs, decode_seqs=seqs), seqs)
        return steps * fixed + op_flops(self._decode, Work(decode_kv_tokens=1)) * kv_total * (
            self.n_layers
        )

    def decode_bytes(self, seqs: int, kv0: int, growth: int, steps: int) -> float:
        """HBM bytes of `steps` decode steps, per device."""
        kv_total = steps * kv0 + growth * steps * (steps - 1) / 2
        op = self._decode
        per_kv = kv_read_bytes_per_token(op, self.plan.precision)
        fixed = self.bytes(Work(tokens=seqs, decode_seqs=seqs))
        return steps * fixed + per_kv * kv_total * self.n_layers

    def decode_times(self, seqs: int, kv0: int, growth: int, steps: int) -> np.ndarray:
        """Durations of `steps` decode-only iterations of `seqs` sequences whose KV
        total starts at `kv0` and grows by `growth` tokens a step."""
        size = self.graph_size(Work(tokens=seqs, decode_seqs=seqs))
        graph = size is not None
        rows = size if size is not None else seqs
        fixed = self.token_part_s(rows, graph) + self.lm_head_s(rows, graph)
        if graph:
            fixed += self._graph_launch
        kv = kv0 + growth * np.arange(steps, dtype=np.float64)
        return fixed + self.n_layers * self.kernel_decode_times(seqs, kv, graph)

    def kernel_decode_times(self, seqs: int, kv: np.ndarray, graph: bool = False) -> np.ndarray:
        """Decode attention over many KV totals at once, as `op_s` prices one."""
        op = self._decode
        out: np.ndarray = self.kernel.decode_attention_times(op, seqs, kv)
        if seqs == 0 or (not graph and self._launch is None):
            return out
        launch = self.kernel.launch_part(op, Work(decode_seqs=seqs, decode_kv_tokens=1))
        floor = self._floor.decode_attention_times(op, seqs, kv)
        exec_s: np.ndarray = np.maximum(out - launch, floor)
        return exec_s if graph else np.maximum(exec_s, self._launch or 0.0)
