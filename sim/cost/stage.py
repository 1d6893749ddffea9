"""The price of one pipeline stage for one micro-batch: the hot path of the engine.

A stage is a TP group holding a block of layers (plus the embedding on the first stage
and the LM head on the last). Its time for a `Work` is n_layers × (the layer's ops on
one device + its TP all-reduces) + the extras. The part that depends only on the
token count (matmuls, element-wise ops, the TP layout's collectives) is memoised by token count; the
attention parts are a few float operations each, so an iteration costs O(1) however
many sequences it holds. `decode_times` prices k consecutive decode steps at once with
numpy, for the engine's leaps over quiet stretches.
"""

from __future__ import annotations

import numpy as np

from sim.arith.ops import (
    LayerPlan,
    Op,
    Work,
    kv_read_bytes_per_token,
    lm_head_op,
    op_bytes,
    op_flops,
)
from sim.cost.layouts import Layout
from sim.cost.roofline import OpKernel


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
    ):
        self.plan = plan
        self.n_layers = n_layers
        self.kernel = kernel
        self.layout = layout  # the TP group's communication (None without TP)
        self.first = first
        self.last = last
        model = plan.model
        self._token_ops = [o for o in plan.ops if o.kind in ("gemm", "elementwise")]
        self._prefill = next(o for o in plan.ops if o.kind == "attn_prefill")
        self._decode = next(o for o in plan.ops if o.kind == "attn_decode")
        self._lm_head = lm_head_op(model, plan.tp)
        self._samples = last and not model.encoder_only  # runs the LM head
        self._embed = Op(
            "embedding", "elementwise", read_elems=model.d_model, write_elems=model.d_model
        )
        self._per_token: dict[int, float] = {}
        self._flops_per_token: dict[int, float] = {}
        self._bytes_per_token: dict[int, float] = {}
        self._lm: dict[int, float] = {}

    # ------------------------------------------------------------------ components
    def token_part_s(self, tokens: int) -> float:
        """Matmuls, element-wise ops and all-reduces of all layers for `tokens`."""
        cached = self._per_token.get(tokens)
        if cached is not None:
            return cached
        work = Work(tokens=tokens)
        layer = sum(self.kernel.op_time(op, work) for op in self._token_ops)
        if self.layout is not None and tokens:
            layer += self.layout.layer_comm_s(tokens)
        total = layer * self.n_layers
        if self.first and tokens:
            total += self.kernel.op_time(self._embed, work)
        self._per_token[tokens] = total
        return total

    def comm_part_s(self, tokens: int) -> float:
        """The TP communication share of `token_part_s` (time the links are busy)."""
        if self.layout is None or not tokens:
            return 0.0
        return self.layout.layer_comm_s(tokens) * self.n_layers

    def lm_head_s(self, rows: int) -> float:
        if not self._samples or rows <= 0:
            return 0.0
        cached = self._lm.get(rows)
        if cached is None:
            cached = self.kernel.op_time(self._lm_head, Work(tokens=rows))
            self._lm[rows] = cached
        return cached

    def attention_s(self, work: Work) -> float:
        t = 0.0
        if work.prefill_tokens:
            t += self.kernel.op_time(self._prefill, work)
        if work.decode_seqs:
            t += self.kernel.op_time(self._decode, work)
        return t * self.n_layers

    # ------------------------------------------------------------------ the stage
    def time(self, work: Work, logits: int) -> float:
        """Seconds for this stage to run `work`, sampling `logits` sequences."""
        return self.token_part_s(work.tokens) + self.attention_s(work) + self.lm_head_s(logits)

    def flops(self, work: Work, logits: int) -> float:
        """Model FLOPs of this stage on one device (for MFU)."""
        per_tok = self._flops_per_token.get(work.tokens)
        if per_tok is None:
            per_tok = sum(op_flops(op, work) for op in self._token_ops) * self.n_layers
            self._flops_per_token[work.tokens] = per_tok
        attn = (op_flops(self._prefill, work) + op_flops(self._decode, work)) * self.n_layers
        lm = op_flops(self._lm_head, Work(tokens=logits)) if self._samples else 0.0
        return per_tok + attn + lm

    def bytes(self, work: Work) -> float:
        """HBM bytes this stage moves on one device (for bandwidth utilisation)."""
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
        fixed = self.token_part_s(seqs) + self.lm_head_s(seqs)
        kv = kv0 + growth * np.arange(steps, dtype=np.float64)
        return fixed + self.n_layers * self.kernel_decode_times(seqs, kv)

    def kernel_decode_times(self, seqs: int, kv: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.kernel.decode_attention_times(self._decode, seqs, kv)
        return out
