"""Batching policies: what each iteration of a replica computes (a registry).

A policy sees its replica's `ReplicaState` and returns a `Step`: the prefill chunks to
run and whether the decoders decode. It also owns the KV blocks: paged policies
(vLLM, Sarathi) give a sequence blocks as its KV grows and preempt when they run out;
reserving policies (Orca, static) set aside a sequence's whole KV on admission.

`Step.repeat` tells the engine how many identical decode-only steps may follow before
the policy must look again. A policy returns more than one only when nothing it could
decide differently can change until a request finishes or arrives — the engine then
runs those steps as one leap (exactly, see sim.engine.replica).

- `static`: FasterTransformer. A batch forms (full, or after `max_wait_s`), runs its
  prefill, then decodes until its longest request ends; nothing joins meanwhile.
  `padding: padded` computes every sequence at the longest prompt and to the last
  step; `packed` (ByteTransformer's padding-free batches) computes only real tokens.
- `orca`: iteration-level batching; new requests' full prompts join decodes in the
  same iteration; KV reserved per request for the max length (`reserve: max`), the
  true length (`oracle`) or the next power of two (`pow2`).
- `vllm`: paged KV; prefill iterations first (FCFS, within `max_num_seqs` and
  `max_num_batched_tokens`), otherwise decode everyone; when a decode step lacks a
  block the latest-admitted sequence is preempted by recompute or swapped to host.
- `sarathi`: chunked prefill under a token budget; every iteration decodes all
  running sequences and fills the rest of the budget with prefill chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sim.arith.ops import causal_pairs
from sim.engine.request import PREFILLING, SWAPPED, WAITING, Req
from sim.engine.state import NEVER, ReplicaState
from sim.spec.base import Bytes, Seconds, Spec


@dataclass
class Step:
    prefills: list[tuple[Req, int]] = field(default_factory=list)  # (request, chunk tokens)
    decode: bool = False
    repeat: int = 1
    swap_out_bytes: float = 0.0
    swap_in_bytes: float = 0.0
    pad_prefill_tokens: int = 0
    pad_prefill_pairs: float = 0.0
    pad_decode_seqs: int = 0
    pad_decode_kv: int = 0


@dataclass
class PolicyContext:
    """What a policy needs from outside its replica."""

    block_bytes: float  # KV bytes of one block on one device
    max_model_len: int
    swap_blocks: int = 0  # host swap space, in blocks
    arrivals_done: bool = False


class CommonParams(Spec):
    block_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = Field(default=None, gt=0)


def step_token_cap(params: CommonParams, max_model_len: int) -> int:
    """The most tokens one step carries: `max_num_batched_tokens` (default
    max(max_model_len, 2048)), or a chunked-prefill token budget below it."""
    cap: int = getattr(params, "max_num_batched_tokens", None) or max(max_model_len, 2048)
    return min(cap, getattr(params, "token_budget", cap))


class BatchingPolicy:
    name: ClassVar[str]
    Params: ClassVar[type[CommonParams]]
    paged: ClassVar[bool] = True

    def __init__(self, params: CommonParams, st: ReplicaState, ctx: PolicyContext):
        self.params = params
        self.st = st
        self.ctx = ctx
        self.token_cap = step_token_cap(params, ctx.max_model_len)

    # --- admission at arrival --------------------------------------------------------
    def reject_reason(self, req: Req) -> str | None:
        """Why `req` can never run here (None: it can)."""
        if req.prompt + req.output > self.ctx.max_model_len:
            return (
                f"exceeds max_model_len: prompt + output = {req.prompt + req.output} > "
                f"{self.ctx.max_model_len}"
            )
        need = self.st.blocks.blocks_for(self.kv_need(req))
        if need > self.st.blocks.total:
            return f"never fits the KV cache: needs {need} blocks of {self.st.blocks.total}"
        return None

    def kv_need(self, req: Req) -> int:
        """KV tokens the request must be able to hold at once to finish."""
        return self.st.kept(req.prompt + req.output - 1)

    # --- the iteration ---------------------------------------------------------------
    def schedule(self, now: float) -> Step | float | None:
        """The next step; or a time to look again; or None to wait for an arrival."""
        raise NotImplementedError

    def decode_bound(self) -> int:
        """How many decode steps the KV blocks can feed from now."""
        st = self.st
        return st.blocks.max_steps(st.step, NEVER) if self.paged else NEVER

    def grow(self, steps: int) -> None:
        """Give the decoders the blocks `steps` decode steps need."""
        if self.paged:
            st = self.st
            st.blocks.allocate(st.blocks.needed_over(st.step, steps))

    def release(self, req: Req, kept_tokens: int) -> None:
        """A request left the replica holding `kept_tokens` of KV."""
        if self.paged:
            self.st.blocks.release(self.st.blocks.blocks_for(kept_tokens))
        else:
            self.st.blocks.release(req.blocks)
        req.blocks = 0

    # --- helpers ---------------------------------------------------------------------
    def _admit(self, blocks: int, now: float) -> Req:
        """Take the head of the queue into the batch, holding `blocks` of KV."""
        st = self.st
        req = st.waiting.popleft()
        st.blocks.allocate(blocks)
        req.state = PREFILLING
        if req.scheduled_s < 0:
            req.scheduled_s = now
        return req

    def _ensure_decode_room(self, step: Step) -> None:
        """Preempt the latest-admitted decoders until this decode step has its blocks."""
        st = self.st
        while st.running and st.blocks.needed_at(st.step) > st.blocks.free:
            victim = next(reversed(st.running.values()))
            self._preempt(victim, step)

    def _preempt(self, victim: Req, step: Step) -> None:
        st = self.st
        kept = st.leave_decode(victim)
        blocks = st.blocks.blocks_for(kept)
        st.blocks.release(blocks)
        victim.preemptions += 1
        mode = getattr(self.params, "preemption", "recompute")
        if mode == "swap" and sum(r.blocks for r in st.swapped) + blocks <= self.ctx.swap_blocks:
            victim.state = SWAPPED
            victim.blocks = blocks
            victim.kv0 = kept
            st.swapped.append(victim)
            step.swap_out_bytes += blocks * self.ctx.block_bytes
        else:
            victim.state = WAITING
            victim.target = victim.prompt + victim.generated
            victim.prefilled = 0
            victim.blocks = 0
            st.waiting.appendleft(victim)

    def _take_incoming(self, step: Step) -> None:
        """Requests whose prefill ran on another replica (disaggregated serving) join the
        decoders once their KV has arrived and blocks are free, before anything new."""
        st = self.st
        while st.incoming:
            req = st.incoming[0]
            blocks = st.blocks.blocks_for(st.kept(req.target))
            if not st.blocks.can_admit(blocks + st.blocks.needed_at(st.step) + 1):
                break
            st.incoming.popleft()
            st.blocks.allocate(blocks)
            st.start_decode(req)

    def _swap_in(self, step: Step) -> None:
        st = self.st
        while st.swapped:
            req = st.swapped[0]
            # Keep this step's decode growth (and the joiner's own next block) free.
            growth = st.blocks.needed_at(st.step) + 1
            if not st.blocks.can_admit(req.blocks + growth):
                break
            st.swapped.popleft()
            st.blocks.allocate(req.blocks)
            step.swap_in_bytes += req.blocks * self.ctx.block_bytes
            req.target = req.kv0
            req.blocks = 0
            st.start_decode(req)


POLICIES: dict[str, type[BatchingPolicy]] = {}


def register(cls: type[BatchingPolicy]) -> type[BatchingPolicy]:
    POLICIES[cls.name] = cls
    return cls


# ------------------------------------------------------------------------------ vLLM


class VllmParams(CommonParams):
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int | None = Field(
        default=None, gt=0, description="default: max(max_model_len, 2048)"
    )
    preemption: Literal["recompute", "swap"] = "recompute"
    swap_space_bytes: Bytes = Field(default=4 * 2**30, alias="swap_space", ge=0)
    watermark: float = Field(default=0.01, ge=0, lt=1)


@register
class VllmPolicy(BatchingPolicy):
    name = "vllm"
    Params = VllmParams
    params: VllmParams

    def reject_reason(self, req: Req) -> str | None:
        if req.prompt > self.token_cap:
            return f"exceeds max_num_batched_tokens: prompt {req.prompt} > {self.token_cap}"
        return super().reject_reason(req)

    def schedule(self, now: float) -> Step | float | None:
        st = self.st
        step = Step()
        self._take_incoming(step)
        if not st.swapped:
            tokens = 0
            seqs = st.decoders
            while st.waiting:
                req = st.waiting[0]
                chunk = req.target
                blocks = st.blocks.blocks_for(st.kept(chunk))
                if (
                    seqs + 1 > self.params.max_num_seqs
                    or tokens + chunk > self.token_cap
                    or not st.blocks.can_admit(blocks)
                ):
                    break
                step.prefills.append((self._admit(blocks, now), chunk))
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


# --------------------------------------------------------------------------- Sarathi


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


@register
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
            blocks = st.blocks.blocks_for(st.kept(req.target))
            if seqs + 1 > self.params.max_num_seqs or not st.blocks.can_admit(blocks + growth):
                break
            st.prefilling.append(self._admit(blocks, now))
            chunk = min(req.target, budget)
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


# ------------------------------------------------------------------------------ Orca


class OrcaParams(CommonParams):
    max_batch_size: int = Field(default=256, gt=0)
    reserve: Literal["max", "oracle", "pow2"] = "max"
    max_num_batched_tokens: int | None = Field(default=None, gt=0)


@register
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


# ---------------------------------------------------------------------------- static


class StaticParams(CommonParams):
    batch_size: int = Field(default=8, gt=0)
    padding: Literal["padded", "packed"] = "padded"
    max_wait_s: Seconds = Field(default=1.0, alias="max_wait", ge=0)


@register
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
            step.pad_prefill_pairs = len(batch) * causal_pairs(longest_prompt, 0) - sum(
                causal_pairs(r.prompt, 0) for r in batch
            )
        return step

    def release(self, req: Req, kept_tokens: int) -> None:
        """KV of a batch is freed when the whole batch ends (see `schedule`)."""
