"""The batching-policy interface: what each iteration of a replica computes.

A policy sees its replica's `ReplicaState` and returns a `Step`: the prefill chunks to
run and whether the decoders decode. It also owns the KV blocks: paged policies
(vLLM, Sarathi) give a sequence blocks as its KV grows and preempt when they run out;
reserving policies (Orca, static) set aside a sequence's whole KV on admission.

`Step.repeat` tells the engine how many identical decode-only steps may follow before
the policy must look again. A policy returns more than one only when nothing it could
decide differently can change until a request finishes or arrives: the engine then
runs those steps as one leap (exactly, see sim.engine.leap).

A policy is one module of this package: a `Params` schema (its YAML keys under
`scheduler:`) and a `BatchingPolicy` subclass registered with `@POLICIES.register`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sim.engine.request import PREFILLING, SWAPPED, WAITING, Req
from sim.engine.state import NEVER, ReplicaState
from sim.spec.scheduler import CommonParams


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
    # The runtime's admission: reserve a request's whole KV (prompt and output) before
    # admitting it, so nothing is ever preempted (TensorRT-LLM's GUARANTEED_NO_EVICT).
    reserve: bool = False


class BatchingPolicy:
    name: ClassVar[str]
    Params: ClassVar[type[CommonParams]]
    paged: ClassVar[bool] = True

    def __init__(self, params: CommonParams, st: ReplicaState, ctx: PolicyContext):
        self.params = params
        self.st = st
        self.ctx = ctx
        self.token_cap = params.step_token_cap(ctx.max_model_len)
        self.committed = 0  # reserve admission: blocks promised to unfinished requests
        self._promised: dict[int, int] = {}

    # --- admission at arrival --------------------------------------------------------
    def reject_reason(self, req: Req) -> str | None:
        """Why `req` can never run here (None: it can): checked in vLLM's order, the
        model's length first, then the policy's own step budget, then the KV cache; the
        reason reads "category: details", with the numbers."""
        return self.length_reason(req) or self.budget_reason(req) or self.kv_reason(req)

    def length_reason(self, req: Req) -> str | None:
        if req.prompt + req.output > self.ctx.max_model_len:
            return (
                f"exceeds max_model_len: prompt + output = {req.prompt} + {req.output} = "
                f"{req.prompt + req.output} > {self.ctx.max_model_len}"
            )
        return None

    def budget_reason(self, req: Req) -> str | None:
        """A bound of the policy's own on what one step may carry (none here)."""
        return None

    def kv_reason(self, req: Req) -> str | None:
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
        self.committed -= self._promised.pop(req.id, 0)
        if self.paged:
            self._free(req, self.st.blocks.blocks_for(kept_tokens))
        else:
            self.st.blocks.release(req.blocks)
        req.blocks = 0

    # --- prefix caching (sim.engine.prefix_cache) -------------------------------------
    def _free(self, req: Req, blocks: int) -> None:
        """`req` gives up its `blocks` blocks of KV: its own are freed, the cached ones
        it references are unreferenced (and stay cached)."""
        if req.shared:
            cache = self.st.blocks.cache
            assert cache is not None
            self.st.blocks.release(blocks - req.shared)
            cache.unref(req.prefix, req.shared)
            req.shared = 0
        else:
            self.st.blocks.release(blocks)

    def _prefix_blocks(self, req: Req) -> int:
        """The full blocks of `req`'s shared prefix that can be cached: all but the
        last prompt token (whose logits must be computed) lie in them."""
        return min(req.prefix_tokens, req.target - 1) // self.st.blocks.block_size

    def _need(self, req: Req) -> tuple[int, int]:
        """Cached blocks the head of the queue would find, and the blocks admitting it
        takes: its KV less those hits, plus the idle cached ones it would reference."""
        st = self.st
        blocks = st.blocks.blocks_for(st.kept(req.target))
        cache = st.blocks.cache
        if cache is None or req.prefix < 0:
            return 0, blocks
        limit = self._prefix_blocks(req)
        hits = cache.hits(req.prefix, limit)
        if cache.caps:  # tiered KV: blocks worth reloading from host DRAM or disk
            hits += sum(cache.lower_hits(req.prefix, limit))
        return hits, blocks - hits + cache.cost(req.prefix, hits)

    def cache_prefix(self, req: Req) -> None:
        """After a prefill chunk: once `req` has computed its prefix's full blocks,
        they are cached, and it references the cached copies instead of its own."""
        cache = self.st.blocks.cache
        if cache is None or req.prefix < 0:
            return
        full = self._prefix_blocks(req)
        if req.shared >= full or req.prefilled < full * self.st.blocks.block_size:
            return
        self.st.blocks.release(full - req.shared)
        cache.unref(req.prefix, req.shared)
        cache.insert(req.prefix, full)
        cache.ref(req.prefix, full)
        req.shared = full

    # --- helpers ---------------------------------------------------------------------
    def _fits(self, req: Req, blocks: int, extra: int = 0) -> bool:
        """Room to admit `req` with `blocks` now (and `extra` kept free for this step's
        growth); with reserve admission also room for its whole KV, promised."""
        st = self.st
        if not st.blocks.can_admit(blocks + extra):
            return False
        if not self.ctx.reserve:
            return True
        whole = st.blocks.blocks_for(st.kept(req.prompt + req.output))
        return self.committed + whole <= st.blocks.total - st.blocks.watermark_blocks

    def _admit(self, blocks: int, now: float, hits: int = 0) -> Req:
        """Take the head of the queue into the batch, holding `blocks` of KV (with
        `hits` cached prefix blocks among them, whose tokens it need not compute)."""
        st = self.st
        req = st.waiting.popleft()
        if self.ctx.reserve and req.id not in self._promised:
            whole = st.blocks.blocks_for(st.kept(req.prompt + req.output))
            self._promised[req.id] = whole
            self.committed += whole
        if hits:
            cache = st.blocks.cache
            assert cache is not None
            cost = cache.cost(req.prefix, hits)
            if cache.caps and hits > cache.hits(req.prefix, hits):
                cache.reload(req.prefix, cache.lower_hits(req.prefix, hits))
            cache.ref(req.prefix, hits)  # first, so the allocation cannot evict them
            st.blocks.allocate(blocks - cost)
            req.shared = hits
            req.prefilled = hits * st.blocks.block_size
        else:
            st.blocks.allocate(blocks)
        req.state = PREFILLING
        if req.scheduled_s < 0:
            req.cached = req.prefilled
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
        self._free(victim, blocks)
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
