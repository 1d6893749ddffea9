"""`vllm`: paged KV (vLLM v0's scheduler). Prefill iterations come first (FCFS, within
`max_num_seqs` and `max_num_batched_tokens`); otherwise every running sequence decodes.
When a decode step lacks a block, the latest-admitted sequence is preempted, by
recompute or by a swap to host memory over PCIe."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.engine.policies.base import BatchingPolicy, Step
from sim.engine.request import Req
from sim.engine.state import NEVER
from sim.registry import POLICIES
from sim.spec.base import Bytes
from sim.spec.scheduler import CommonParams
from sim.spec.workload import MAX_TOKENS


class VllmParams(CommonParams):
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, le=MAX_TOKENS, description="default: max(max_model_len, 2048)"
    )
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space_bytes: Bytes = Field(default=4 * 2**30, alias="swap_space", ge=0)
    watermark: float = Field(default=0.01, ge=0, lt=1)


@POLICIES.register("vllm")
class VllmPolicy(BatchingPolicy):
    name = "vllm"
    Params = VllmParams
    params: VllmParams

    def budget_reason(self, req: Req) -> str | None:
        # A prompt prefills in one step here (no chunking): it must fit the step budget.
        if req.prompt > self.token_cap:
            return f"exceeds max_num_batched_tokens: prompt {req.prompt} > {self.token_cap}"
        return None

    def schedule(self, now: float) -> Step | float | None:
        st = self.st
        step = Step()
        self._take_incoming(step)
        if not st.swapped:
            tokens = 0
            seqs = st.decoders
            while st.waiting:
                req = st.waiting[0]
                hits, blocks = self._need(req)
                chunk = req.target - hits * st.blocks.block_size
                if (
                    seqs + 1 > self.params.max_num_seqs
                    or tokens + chunk > self.token_cap
                    or not self._fits(req, blocks)
                ):
                    break
                step.prefills.append((self._admit(blocks, now, hits), chunk))
                tokens += chunk
                seqs += 1
            if step.prefills:
                return step
        if not st.running and not st.swapped:
            return None
        self._ensure_decode_room(step)
        if not step.swap_out_bytes:
            self._swap_in(step)
        if not st.running:
            return step if step.swap_out_bytes or step.swap_in_bytes else None
        step.decode = True
        if not step.swap_out_bytes and not step.swap_in_bytes:
            step.repeat = NEVER
        return step
