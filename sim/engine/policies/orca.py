"""`orca`: iteration-level batching. New requests' whole prompts join the decodes in the
same iteration; each request's KV is reserved on admission for the model's maximum
length (`reserve: max`), its true length (`oracle`) or the next power of two (`pow2`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.engine.policies.base import BatchingPolicy, Step
from sim.engine.request import Req
from sim.engine.state import NEVER
from sim.registry import POLICIES
from sim.spec.scheduler import CommonParams


class OrcaParams(CommonParams):
    max_batch_size: int = Field(default=256, gt=0)
    reserve: Literal["max", "oracle", "pow2"] = "max"
    max_num_batched_tokens: int | None = Field(default=None, gt=0)


@POLICIES.register("orca")
class OrcaPolicy(BatchingPolicy):
    name = "orca"
    Params = OrcaParams
    params: OrcaParams
    paged = False

    def kv_need(self, req: Req) -> int:
        true_len = req.prompt + req.output
        if self.params.reserve == "max":
            return self.ctx.max_model_len
        if self.params.reserve == "pow2":
            return min(1 << (true_len - 1).bit_length(), self.ctx.max_model_len)
        return true_len

    def schedule(self, now: float) -> Step | float | None:
        st = self.st
        step = Step()
        tokens = st.decoders
        while st.waiting and st.decoders + len(step.prefills) < self.params.max_batch_size:
            req = st.waiting[0]
            blocks = st.blocks.blocks_for(st.kept(self.kv_need(req)))
            if tokens + req.target > self.token_cap or not st.blocks.can_admit(blocks):
                break
            self._admit(blocks, now).blocks = blocks
            step.prefills.append((req, req.target))
            tokens += req.target
        step.decode = bool(st.running)
        if not step.decode and not step.prefills:
            return None
        if step.decode and not step.prefills:
            step.repeat = NEVER
        return step
