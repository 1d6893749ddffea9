"""`sarathi` (Sarathi-Serve): chunked prefill under a token budget. Every iteration
decodes all running sequences and fills the rest of the budget with prefill chunks, so
long prompts never stall the decoders for a whole prefill."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.engine.policies.base import BatchingPolicy, Step
from sim.engine.state import NEVER
from sim.registry import POLICIES
from sim.spec.base import Bytes
from sim.spec.scheduler import CommonParams


class SarathiParams(CommonParams):
    max_num_seqs: int = Field(default=128, gt=0)
    token_budget: int = Field(default=512, gt=0, alias="chunk_size")
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space_bytes: Bytes = Field(default=4 * 2**30, alias="swap_space", ge=0)
    watermark: float = Field(default=0.01, ge=0, lt=1)

    @model_validator(mode="after")
    def _budget(self) -> SarathiParams:
        if self.max_num_seqs > self.token_budget:
            raise ValueError(
                f"max_num_seqs={self.max_num_seqs} exceeds token_budget={self.token_budget}: "
                "every running sequence's decode token must fit the budget"
            )
        return self


@POLICIES.register("sarathi")
class SarathiPolicy(BatchingPolicy):
    name = "sarathi"
    Params = SarathiParams
    params: SarathiParams

    def schedule(self, now: float) -> Step | float | None:
        st = self.st
        step = Step()
        self._take_incoming(step)
        if st.running:
            self._ensure_decode_room(step)
        if not step.swap_out_bytes:
            self._swap_in(step)
        budget = self.params.token_budget - st.decoders
        for req in st.prefilling:
            if budget <= 0:
                break
            chunk = min(req.target - req.prefilled, budget)
            step.prefills.append((req, chunk))
            budget -= chunk
        seqs = st.decoders + len(st.prefilling)
        growth = st.blocks.needed_at(st.step) if st.running else 0  # this step's decodes
        while budget > 0 and st.waiting and not st.swapped:
            req = st.waiting[0]
            hits, blocks = self._need(req)
            if seqs + 1 > self.params.max_num_seqs or not self._fits(req, blocks, growth):
                break
            st.prefilling.append(self._admit(blocks, now, hits))
            chunk = min(req.target - req.prefilled, budget)
            step.prefills.append((req, chunk))
            budget -= chunk
            seqs += 1
        step.decode = bool(st.running)
        if not step.decode and not step.prefills:
            return step if step.swap_out_bytes or step.swap_in_bytes else None
        if (
            step.decode
            and not step.prefills
            and not st.prefilling
            and not step.swap_out_bytes
            and not step.swap_in_bytes
        ):
            step.repeat = NEVER
        return step
