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

Under speculative decoding (`Speculation`, set by sim.plan.speculative) a decode-only
step is priced as its share of a proposal-and-verification round: k draft passes and a
(k+1)-token verification of the target, over the expected tokens a round yields.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace

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
    split_work,
)
from sim.cost.experts import ExpertParallel
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
        experts: ExpertParallel | None = None,
        speculation: Speculation | None = None,
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
        self.experts = experts  # expert / attention data parallelism (None: neither)
        ops = plan.ops if experts is None else experts.dense_ops
        self._prefill = next(o for o in ops if o.kind == "attn_prefill")
        self._decode = next(o for o in ops if o.kind == "attn_decode")
        self._expert_all: list[Op] = []
        self._expert_ops: list[Op] = []
        if experts is not None:
            self._all_token_ops = [o for o in ops if o.kind in ("gemm", "elementwise")]
            self._token_ops = [o for o in self._all_token_ops if o.name not in fused]
            self._expert_all = list(experts.expert_ops)
            self._expert_ops = [o for o in self._expert_all if o.name not in fused]
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
        self._per_token: dict[tuple[int, bool, int], float] = {}
        self._flops_per_token: dict[int, float] = {}
        self._bytes_per_token: dict[int, float] = {}
        self._lm: dict[tuple[int, bool], float] = {}
        self.speculation = speculation  # None: one token per decoding sequence a step

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
        """The captured batch a step replays (its tokens padded up), or None: eager.
        Attention ranks replay their own graphs: each pads its share of the tokens."""
        if self.experts is not None and self.experts.dp > 1:
            dp = self.experts.dp
            size = self._graph_size(-(-work.tokens // dp), work.prefill_tokens)
            return None if size is None else max(size * dp, work.tokens)
        return self._graph_size(work.tokens, work.prefill_tokens)

    def _graph_size(self, tokens: int, prefill_tokens: int) -> int | None:
        if not self._captured:
            return None
        if prefill_tokens and not self._graph_mixed:
            return None
        if not self._graph_pads:  # a program for every shape
            if tokens <= self._captured[-1] or (self._graph_mixed and prefill_tokens):
                return tokens
            return None
        if tokens > self._captured[-1]:
            return tokens if self._graph_mixed and prefill_tokens else None
        return self._captured[bisect.bisect_left(self._captured, tokens)]

    # ------------------------------------------------------------------ components
    def token_part_s(self, tokens: int, graph: bool = False, biggest: int = 0) -> float:
        """Matmuls, element-wise ops and collectives of all layers for `tokens`, of
        which one sequence brings at most `biggest` (it matters only to attention
        ranks: a sequence's tokens all run on one)."""
        if self.experts is None or self.experts.dp == 1:
            biggest = 0
        key = (tokens, graph, biggest)
        cached = self._per_token.get(key)
        if cached is not None:
            return cached
        if self.experts is not None:
            total = self._ep_compute_s(tokens, graph, biggest) * self.n_layers
            if tokens:
                total += self.experts.layer_comm_s(tokens) * self.n_layers
            total += self._embed_s(tokens, graph)
            self._per_token[key] = total
            return total
        work = Work(tokens=tokens)
        layer = sum(self.op_s(op, work, graph) for op in self._token_ops)
        if self.layout is not None and tokens:
            comm = self.layout.layer_comm_s(tokens)
            layer = max(layer, comm) if self._overlap_gather else layer + comm
        total = layer * self.n_layers + self._embed_s(tokens, graph)
        self._per_token[key] = total
        return total

    def _ep_compute_s(self, tokens: int, graph: bool, biggest: int = 0) -> float:
        """One layer's matmuls and element-wise ops under expert parallelism: the
        slowest attention rank's dense ops and the slowest expert group's experts (plus
        the embedding, once, on the first stage: see `token_part_s`)."""
        rank, rows = self._op_works(tokens, biggest)
        layer = sum(self.op_s(op, rank, graph) for op in self._token_ops)
        layer += sum(self.op_s(op, rows, graph) for op in self._expert_ops)
        return layer

    def _embed_s(self, tokens: int, graph: bool) -> float:
        if not (self.first and tokens):
            return 0.0
        rank = tokens if self.experts is None else self.experts.rank_tokens(tokens)
        return self.op_s(self._embed, Work(tokens=rank), graph)

    def comm_part_s(self, tokens: int) -> float:
        """The TP (and EP) communication share of `token_part_s` (time the links are
        busy; with two-batch overlap, both micro-batches' communication)."""
        if self.experts is not None:
            if not tokens:
                return 0.0
            if self._overlapped(tokens):
                a, b = -(-tokens // 2), tokens // 2
                pair = self.experts.layer_comm_s(a) + self.experts.layer_comm_s(b)
                return pair * self.n_layers
            return self.experts.layer_comm_s(tokens) * self.n_layers
        if self.layout is None or not tokens:
            return 0.0
        return self.layout.layer_comm_s(tokens) * self.n_layers

    def _overlapped(self, tokens: int) -> bool:
        return self.experts is not None and self.experts.overlap and tokens >= 2

    def layer_parts(self, work: Work, graph: bool = False) -> tuple[float, float]:
        """(compute, communication) seconds of one layer of `work` under expert
        parallelism: its matmuls, element-wise ops and attention; its collectives."""
        ep = self.experts
        assert ep is not None
        compute = self._ep_compute_s(work.tokens, graph, work.prefill_max_chunk)
        if self.n_layers:
            compute += self.attention_s(work, graph) / self.n_layers
        return compute, ep.layer_comm_s(work.tokens)

    def overlapped_time(self, work: Work, logits: int) -> float:
        """Two-batch overlap: micro-batches A and B alternate, each one's compute
        hiding the other's communication, layer after layer:
        c_A + L·max(c_B, m_A) + (L−1)·max(c_A, m_B) + m_B (module sim.cost.experts)."""
        graph = self.graph_size(work) is not None
        a, b = split_work(work, logits, 2)
        c_a, m_a = self.layer_parts(a.work, graph)
        c_b, m_b = self.layer_parts(b.work, graph)
        n = self.n_layers
        layers = c_a + n * max(c_b, m_a) + (n - 1) * max(c_a, m_b) + m_b if n else 0.0
        extra = self._embed_s(work.tokens, graph) + self.lm_head_s(logits, graph)
        return layers + extra + (self._graph_launch if graph else 0.0)

    def lm_head_s(self, rows: int, graph: bool = False) -> float:
        if not self._samples or rows <= 0:
            return 0.0
        if self.experts is not None:  # each attention rank samples its own sequences
            rows = self.experts.rank_tokens(rows)
        key = (rows, graph)
        cached = self._lm.get(key)
        if cached is None:
            cached = self.op_s(self._lm_head, Work(tokens=rows), graph)
            self._lm[key] = cached
        return cached

    def attention_s(self, work: Work, graph: bool = False) -> float:
        t = 0.0
        if work.prefill_tokens:
            t += self.op_s(self._prefill, self._slowest_rank(work), graph)
        if work.decode_seqs:
            t += self.op_s(self._decode, work, graph)
        return t * self.n_layers

    def _slowest_rank(self, work: Work) -> Work:
        """Prefill attention as the slowest attention rank runs it, in the units of the
        prefill op (whose `share` is already 1/dp of the step): the ranks' even share, or
        the one sequence with the most pairs, whichever is more."""
        if self.experts is None or self.experts.dp == 1 or not work.prefill_max_chunk:
            return work
        dp = self.experts.dp
        return replace(
            work,
            prefill_tokens=max(work.prefill_tokens, dp * work.prefill_max_chunk),
            prefill_pairs=max(work.prefill_pairs, dp * work.prefill_max_pairs),
            prefill_kv_tokens=max(work.prefill_kv_tokens, dp * work.prefill_max_chunk),
        )

    # ------------------------------------------------------------------ the stage
    def time(self, work: Work, logits: int) -> float:
        """Seconds for this stage to run `work`, sampling `logits` sequences (under
        speculative decoding, as `Speculation.step_s` prices it)."""
        if self.speculation is not None:
            return self.speculation.step_s(self, work, logits)
        return self.plain_time(work, logits)

    def plain_time(self, work: Work, logits: int) -> float:
        """Seconds for this stage to run `work` as one forward pass."""
        if self._overlapped(work.tokens):
            return self.overlapped_time(work, logits)
        size = self.graph_size(work)
        big = work.prefill_max_chunk
        if size is None:
            return (
                self.token_part_s(work.tokens, False, big)
                + self.attention_s(work)
                + self.lm_head_s(logits)
            )
        pad = size - work.tokens
        return (
            self.token_part_s(size, True, big)
            + self.attention_s(work, True)
            + self.lm_head_s(logits + pad if logits else 0, True)
            + self._graph_launch
        )

    def flops(self, work: Work, logits: int) -> float:
        """Model FLOPs of this stage on one device (for MFU)."""
        if self.speculation is not None:
            return self.speculation.flops(self, work, logits)
        return self.plain_flops(work, logits)

    def plain_flops(self, work: Work, logits: int) -> float:
        """Model FLOPs of one forward pass of `work` on one device."""
        per_tok = self._flops_per_token.get(work.tokens)
        if per_tok is None:
            rank, rows = self._op_works(work.tokens)
            per_tok = sum(op_flops(op, rank) for op in self._all_token_ops)
            per_tok += sum(op_flops(op, rows) for op in self._expert_all)
            per_tok *= self.n_layers
            self._flops_per_token[work.tokens] = per_tok
        attn = (op_flops(self._prefill, work) + op_flops(self._decode, work)) * self.n_layers
        lm = op_flops(self._lm_head, Work(tokens=logits)) if self._samples else 0.0
        return per_tok + attn + lm

    def bytes(self, work: Work) -> float:
        """HBM bytes this stage moves on one device (for bandwidth utilisation); fused
        element-wise ops move nothing of their own."""
        if self.speculation is not None:
            return self.speculation.bytes(self, work)
        return self.plain_bytes(work)

    def step_comm_s(self, work: Work) -> float:
        """The communication share of `time(work, ·)`: the TP (and EP) collectives."""
        if self.speculation is not None:
            return self.speculation.comm_s(self, work)
        return self.comm_part_s(work.tokens)

    def plain_bytes(self, work: Work) -> float:
        """HBM bytes of one forward pass of `work` on one device."""
        p = self.plan.precision
        per_tok = self._bytes_per_token.get(work.tokens)
        if per_tok is None:
            rank, rows = self._op_works(work.tokens)
            per_tok = sum(op_bytes(op, rank, p) for op in self._token_ops)
            per_tok += sum(op_bytes(op, rows, p) for op in self._expert_ops)
            per_tok *= self.n_layers
            self._bytes_per_token[work.tokens] = per_tok
        attn = op_bytes(self._prefill, work, p) + op_bytes(self._decode, work, p)
        return per_tok + attn * self.n_layers

    def _op_works(self, tokens: int, biggest: int = 0) -> tuple[Work, Work]:
        """The work of the dense ops (on the slowest attention rank, which runs at
        least the `biggest` sequence) and of the expert ops for a step of `tokens`."""
        if self.experts is None:
            return Work(tokens=tokens), Work()
        rank = Work(tokens=self.experts.rank_tokens(tokens, biggest))
        return rank, Work(tokens=self.experts.expert_rows(tokens))

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
        if self._overlapped(seqs):  # each step as `time` prices it
            kvs = kv0 + growth * np.arange(steps, dtype=np.int64)
            return np.array(
                [
                    self.time(Work(tokens=seqs, decode_seqs=seqs, decode_kv_tokens=int(kv)), seqs)
                    for kv in kvs
                ],
                dtype=np.float64,
            )
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


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding on a stage (a one-stage replica): each decode step proposes
    `k` tokens per sequence (`draft`: k sequential decode passes of the draft model or
    head over the same sequences, on the same devices; None: n-gram lookup, no device
    time) and verifies them in one (k+1)-token pass of the target (attention of k + 1
    queries per sequence over its context, matmuls over (k+1)·seqs rows, logits for
    every row). A verification step yields `tokens_per_step` tokens per sequence.

    Acceptance is taken as its expectation: the engine keeps advancing one token per
    sequence per step, and each such step is charged 1/`tokens_per_step` of a
    proposal-and-verification round (so a sequence's tokens cost exactly the rounds its
    expected acceptance needs, and its time per output token is round / E). A step that
    carries prefill chunks decodes without speculating (one token per sequence, vLLM's
    speculative decoding before chunked prefill); the draft then prefills the chunks.
    """

    k: int
    tokens_per_step: float
    draft: StageCost | None

    def verify_work(self, work: Work) -> Work:
        """The target's pass that checks `work`'s decoders' k proposals each."""
        q, seqs, kv = self.k + 1, work.decode_seqs, work.decode_kv_tokens
        pairs = q * kv + seqs * q * (q + 1) / 2
        return Work(
            tokens=q * seqs,
            prefill_tokens=q * seqs,
            prefill_pairs=pairs,
            prefill_kv_tokens=kv + q * seqs,
            prefill_max_chunk=q,
            prefill_max_pairs=pairs / seqs if seqs else 0.0,
        )

    def proposal_works(self, work: Work) -> list[Work]:
        """The draft's k decode passes: its KV grows by one token per sequence each."""
        seqs, kv = work.decode_seqs, work.decode_kv_tokens
        return [
            Work(tokens=seqs, decode_seqs=seqs, decode_kv_tokens=kv + j * seqs)
            for j in range(self.k)
        ]

    @staticmethod
    def _speculates(work: Work) -> bool:
        return bool(work.decode_seqs) and not work.prefill_tokens

    @staticmethod
    def _draft_prefill(work: Work) -> Work:
        return replace(work, tokens=work.prefill_tokens, decode_seqs=0, decode_kv_tokens=0)

    def round_s(self, target: StageCost, work: Work) -> float:
        """One proposal and its verification for `work`'s decoders."""
        seqs = work.decode_seqs
        t = target.plain_time(self.verify_work(work), (self.k + 1) * seqs)
        if self.draft is not None:
            t += sum(self.draft.time(w, seqs) for w in self.proposal_works(work))
        return t

    def step_s(self, target: StageCost, work: Work, logits: int) -> float:
        if self._speculates(work):
            return self.round_s(target, work) / self.tokens_per_step
        t = target.plain_time(work, logits)
        if self.draft is not None and work.prefill_tokens:
            t += self.draft.time(self._draft_prefill(work), 0)
        return t

    def flops(self, target: StageCost, work: Work, logits: int) -> float:
        if self._speculates(work):
            seqs = work.decode_seqs
            f = target.plain_flops(self.verify_work(work), (self.k + 1) * seqs)
            if self.draft is not None:
                f += sum(self.draft.flops(w, seqs) for w in self.proposal_works(work))
            return f / self.tokens_per_step
        f = target.plain_flops(work, logits)
        if self.draft is not None and work.prefill_tokens:
            f += self.draft.flops(self._draft_prefill(work), 0)
        return f

    def bytes(self, target: StageCost, work: Work) -> float:
        if self._speculates(work):
            b = target.plain_bytes(self.verify_work(work))
            if self.draft is not None:
                b += sum(self.draft.bytes(w) for w in self.proposal_works(work))
            return b / self.tokens_per_step
        b = target.plain_bytes(work)
        if self.draft is not None and work.prefill_tokens:
            b += self.draft.bytes(self._draft_prefill(work))
        return b

    def comm_s(self, target: StageCost, work: Work) -> float:
        if self._speculates(work):
            c = target.comm_part_s((self.k + 1) * work.decode_seqs)
            if self.draft is not None:
                c += self.k * self.draft.comm_part_s(work.decode_seqs)
            return c / self.tokens_per_step
        c = target.comm_part_s(work.tokens)
        if self.draft is not None and work.prefill_tokens:
            c += self.draft.comm_part_s(work.prefill_tokens)
        return c
