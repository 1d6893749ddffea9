"""`static` (FasterTransformer): a batch forms (full, or after `max_wait`), runs its
prefill, then decodes until its longest request ends; nothing joins meanwhile.
`padding: padded` computes every sequence at the longest prompt and to the last step;
`packed` (ByteTransformer's padding-free batches) computes only the real tokens."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.arith.ops import causal_pairs
from sim.engine.policies.base import BatchingPolicy, PolicyContext, Step
from sim.engine.request import PREFILLING, Req
from sim.engine.state import NEVER, ReplicaState
from sim.registry import POLICIES
from sim.spec.base import Seconds
from sim.spec.scheduler import CommonParams


class StaticParams(CommonParams):
    batch_size: int = Field(default=8, gt=0)
    padding: Literal["padded", "packed"] = "padded"
    max_wait_s: Seconds = Field(default=1.0, alias="max_wait", ge=0)


@POLICIES.register("static")
class StaticPolicy(BatchingPolicy):
    """A batch is a closed group; `st.running` holds its unfinished members."""

    name = "static"
    Params = StaticParams
    params: StaticParams
    paged = False

    def __init__(self, params: CommonParams, st: ReplicaState, ctx: PolicyContext):
        super().__init__(params, st, ctx)
        self.batch: list[Req] = []
        self.max_prompt = 0
        self.start_step = 0

    def kv_need(self, req: Req) -> int:
        return req.prompt + req.output

    def schedule(self, now: float) -> Step | float | None:
        st = self.st
        if self.batch and not st.running and not st.prefilling:
            for req in self.batch:
                st.blocks.release(req.blocks)
                req.blocks = 0
            self.batch = []
        if not self.batch:
            return self._form(now)
        step = Step(decode=True, repeat=NEVER)
        if self.params.padding == "padded":
            size = len(self.batch)
            step.pad_decode_seqs = size - st.decoders
            padded_kv = size * (self.max_prompt + st.step - self.start_step)
            step.pad_decode_kv = padded_kv - st.kv_sum
        return step

    def _form(self, now: float) -> Step | float | None:
        st = self.st
        if not st.waiting:
            return None
        size = self.params.batch_size
        oldest = st.waiting[0].arrival_s
        if len(st.waiting) < size and not self.ctx.arrivals_done:
            deadline = oldest + self.params.max_wait_s
            if now < deadline:
                return deadline
        step = Step()
        batch: list[Req] = []
        longest_prompt = longest_output = packed_blocks = 0
        padded = self.params.padding == "padded"
        while st.waiting and len(batch) < size:
            req = st.waiting[0]
            p = max(longest_prompt, req.prompt)
            o = max(longest_output, req.output)
            own = st.blocks.blocks_for(req.prompt + req.output)
            need = st.blocks.blocks_for(p + o) * (len(batch) + 1) if padded else packed_blocks + own
            if need > st.blocks.free:
                break
            st.waiting.popleft()
            batch.append(req)
            longest_prompt, longest_output = p, o
            packed_blocks += own
        if not batch:
            return None
        if self.params.padding == "padded":
            per = st.blocks.blocks_for(longest_prompt + longest_output)
            for req in batch:
                req.blocks = per
        else:
            for req in batch:
                req.blocks = st.blocks.blocks_for(req.prompt + req.output)
        st.blocks.allocate(sum(r.blocks for r in batch))
        for req in batch:
            req.state = PREFILLING
            req.scheduled_s = now
            step.prefills.append((req, req.target))
        self.batch = batch
        self.max_prompt = longest_prompt
        self.start_step = st.step
        if self.params.padding == "padded":
            real = sum(r.prompt for r in batch)
            step.pad_prefill_tokens = len(batch) * longest_prompt - real
            window = st.window
            step.pad_prefill_pairs = len(batch) * causal_pairs(longest_prompt, 0, window) - sum(
                causal_pairs(r.prompt, 0, window) for r in batch
            )
        return step

    def release(self, req: Req, kept_tokens: int) -> None:
        """KV of a batch is freed when the whole batch ends (see `schedule`)."""
