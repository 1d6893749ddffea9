"""A replica: pipeline stages on TP groups, driven by one process per virtual engine.

Each virtual engine (one per pipeline micro-batch slot, vLLM-style; one when pp = 1)
owns a `ReplicaState` and a batching policy and loops (sim.engine.step): ask the policy
for a step, price it with the stage costs, hold the stages' devices for that long,
commit. The replica routes arrivals to its least-loaded engine and counts what it has
outstanding, the two numbers a router sees.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import simpy

from sim.arith.ops import MicroBatch, Work, causal_pairs, prefill_keys
from sim.engine.kv_cache import Tally
from sim.engine.leap import Leap, leap_bound
from sim.engine.offload import OffloadExecutor
from sim.engine.pipeline import PipelineSchedule
from sim.engine.policies.base import BatchingPolicy, Step
from sim.engine.records import Recorder
from sim.engine.request import DONE, REJECTED, Req
from sim.engine.resources import Links, Stage
from sim.engine.state import ReplicaState
from sim.plan.deploy import Path, ReplicaPlan
from sim.spec.runtime import HostSpec

Handoff = Callable[[Req, int, Callable[[], None]], None]


class Replica:
    def __init__(
        self,
        env: simpy.Environment,
        plan: ReplicaPlan,
        engines: list[tuple[ReplicaState, BatchingPolicy]],
        recorder: Recorder,
        links: Links,
        leap: bool,
        act_bytes_per_token: float,
        schedule: PipelineSchedule,
        host: HostSpec,
        handoff: Handoff | None = None,
        recompute: bool = False,
    ):
        self.env = env
        self.plan = plan
        self.index = plan.index
        self.stages = [Stage(sp, simpy.Resource(env, 1)) for sp in plan.stages]
        self.recorder = recorder
        self.links = links
        self.act_bytes_per_token = act_bytes_per_token
        self.schedule = schedule
        self.host = host  # the runtime's host time per iteration
        # A runtime without a KV cache (`kv_cache: none`): every step recomputes each
        # sequence from its first token, with logits for every position.
        self.recompute = recompute
        # Disaggregated serving: a prefill replica hands requests off after their first
        # token; a decode replica takes them in. A colocated replica does both.
        self.handoff = handoff
        self.offload = (
            OffloadExecutor(plan.offload, self.model_layers) if plan.offload is not None else None
        )
        # Leaps need the device to themselves (one stage, one engine) and one
        # micro-batch per decode step. A speculative step is priced as its share of a
        # proposal-and-verification round (sim.cost.stage.Speculation), which the leaps'
        # vectorised decode pricing does not follow: speculation steps one at a time.
        can_leap = (
            leap
            and len(self.stages) == 1
            and len(engines) == 1
            and not schedule.splits_decode
            and plan.stages[0].cost.speculation is None
        )
        self.engines = [
            VirtualEngine(self, i, st, policy, can_leap) for i, (st, policy) in enumerate(engines)
        ]
        self._in_flight = 0
        self._in_flight_since = 0.0
        self.active_s = 0.0  # time with at least one step in flight (for the bubble)
        self.outstanding = 0  # requests routed here and not yet finished

    @property
    def model_layers(self) -> int:
        return sum(sp.cost.n_layers for sp in self.plan.stages)

    # ------------------------------------------------------------------ routing view

    @property
    def kv_load(self) -> float:
        """KV blocks in use plus those the queued requests' prompts need, over the
        replica's blocks (above 1 when more is queued than fits)."""
        demand = 0
        total = 0
        for e in self.engines:
            st = e.state
            queued = st.waiting.tokens + st.incoming.tokens
            demand += st.blocks.used + st.blocks.blocks_for(queued)
            total += st.blocks.total
        return demand / (total or 1)

    def admit(self, req: Req) -> None:
        """A request arrives at this replica (from the router)."""
        req.replica = self.index
        if len(self.engines) == 1:
            engine = self.engines[0]
        else:  # the least-loaded virtual engine, ties by index
            engine = min(self.engines, key=lambda e: (e.state.outstanding, e.index))
        reason = engine.policy.reject_reason(req)
        if reason is not None:
            req.state = REJECTED
            self.recorder.reject(req, reason)
            return
        engine.state.outstanding += 1
        self.outstanding += 1
        engine.state.waiting.append(req)
        engine.wake()

    def expect(self, req: Req) -> None:
        """A request is on its way here (its KV in flight): count it as routed here."""
        req.replica = self.index
        self.outstanding += 1

    def receive(self, req: Req) -> None:
        """A request prefilled elsewhere arrives with its KV: decode it here."""
        engine = min(self.engines, key=lambda e: (e.state.outstanding, e.index))
        engine.state.outstanding += 1
        engine.state.incoming.append(req)
        engine.wake()

    def begin_step(self) -> None:
        if self._in_flight == 0:
            self._in_flight_since = self.env.now
        self._in_flight += 1

    def end_step(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self.active_s += self.env.now - self._in_flight_since

    def settle(self, now: float) -> None:
        """The run stopped at `now` with steps in flight: count their time so far."""
        if self._in_flight:
            self.active_s += now - self._in_flight_since
            self._in_flight_since = now

    @property
    def tally(self) -> Tally:
        """Blocks in use across this replica's engines, and the most at once."""
        return self.engines[0].state.blocks.tally

    def arrivals_done(self) -> None:
        for e in self.engines:
            e.policy.ctx.arrivals_done = True
            e.wake()

    def start(self) -> None:
        for e in self.engines:
            e.process = self.env.process(e.run())


class VirtualEngine:
    def __init__(
        self,
        replica: Replica,
        index: int,
        state: ReplicaState,
        policy: BatchingPolicy,
        leap: bool,
    ):
        self.replica = replica
        self.env = replica.env
        self.index = index
        self.state = state
        self.policy = policy
        self.leap = leap
        self.process: simpy.Process | None = None
        self._idle: simpy.Event | None = None
        self._leaping = False
        cache = state.blocks.cache
        self.tiers = cache if cache is not None and cache.caps else None
        if self.tiers is not None:
            n = len(self.tiers.caps)
            self.reload_bytes = [0.0] * n
            self.reload_s = [0.0] * n  # from the reload's start (link waits included)
            self.tiers.worth = self._worth

    # ------------------------------------------------------------------ tiered KV
    def _reload_path(self, tier: int) -> tuple[Path, ...]:
        plan = self.replica.plan
        if tier == 0:
            return (plan.host,)
        assert plan.disk_read is not None
        return (plan.disk_read, plan.host)

    def _worth(self, tier: int, first: int, blocks: int) -> bool:
        """Reload `blocks` prefix blocks (from block `first` on) from `tier` when their
        uncontended copy is no slower than the replica's stages prefilling their tokens
        alone, at their context; else recompute them."""
        size = blocks * self.policy.ctx.block_bytes
        copy_s = sum(p.seconds(size) for p in self._reload_path(tier))
        bs = self.state.blocks.block_size
        work = Work.prefill(1, blocks * bs, cached=first * bs)
        return copy_s <= sum(st.cost.time(work, 0) for st in self.replica.stages)

    def _tier_copies(self) -> Generator[Any, Any, None]:
        """Carry the tiers' queued copies: eviction copies (GPU to host over PCIe, host
        to disk over NVMe) hold their links in the background; reloads (disk to host,
        then host to GPU) hold theirs before the step that uses them."""
        tiers = self.tiers
        assert tiers is not None
        env = self.env
        links = self.replica.links
        plan = self.replica.plan
        block_bytes = self.policy.ctx.block_bytes
        reload = [0.0] * len(tiers.caps)
        for kind, tier, blocks in tiers.pending:
            size = blocks * block_bytes
            if kind == "reload":
                reload[tier] += size
            else:
                path = plan.host if tier == 0 else plan.disk_write
                assert path is not None
                env.process(links.transfer(path, size))
        tiers.pending.clear()
        for tier, size in enumerate(reload):
            if size > 0:
                start = env.now
                for path in self._reload_path(tier):
                    yield from links.transfer(path, size)
                self.reload_bytes[tier] += size
                self.reload_s[tier] += env.now - start

    def wake(self) -> None:
        if self._idle is not None and not self._idle.triggered:
            self._idle.succeed()
        elif self._leaping and self.process is not None:
            self._leaping = False
            self.process.interrupt()

    # ------------------------------------------------------------------ the loop
    def run(self) -> Generator[Any, Any, None]:
        env = self.env
        replica = self.replica
        # One stage and one engine whose collectives cross no link anything else uses:
        # nobody else wants the device or its links, so skip the resources.
        single = (
            len(replica.stages) == 1
            and len(replica.engines) == 1
            and not replica.stages[0].plan.shared
        )
        while True:
            now = env.now
            decision = self.policy.schedule(now)
            if decision is None or isinstance(decision, float):
                self._idle = env.event()
                if isinstance(decision, float):
                    yield self._idle | env.timeout(max(0.0, decision - now))
                else:
                    yield self._idle
                self._idle = None
                continue
            step = decision
            if self.tiers is not None and self.tiers.pending:
                yield from self._tier_copies()
            if step.swap_out_bytes or step.swap_in_bytes:
                yield from self._swap(step)
            if (
                self.leap
                and single
                and replica.offload is None
                and step.decode
                and not step.prefills
                and step.repeat > 1
            ):
                k = leap_bound(self.state, self.policy, step)
                if k > 1:
                    yield from self._leap(step, k)
                    continue
            work, useful, logits, real_logits = self._work(step)
            start = env.now
            replica.begin_step()
            host = replica.host
            real_tokens = sum(chunk for _, chunk in step.prefills) + useful.decode_seqs
            host_s = host.seconds(len(step.prefills) + useful.decode_seqs, real_tokens)
            # the host prepares the step while the devices wait (unless it overlaps)
            serial = host_s if host_s and not host.overlap else 0.0
            batches = None if replica.offload is not None else replica.schedule.split(work, logits)
            if single and batches is not None and len(batches) == 1:
                # one stage, nothing else holds it: the host time and the step in one event
                stage = replica.stages[0]
                t = stage.cost.time(work, logits)
                gpu_start = env.now + serial
                self._begin(stage, work, useful, logits, real_logits, gpu_start, t)
                yield env.timeout(serial + t)
                self._end(stage, 0, work, gpu_start, env.now)
            else:
                if serial:
                    yield env.timeout(serial)
                if batches is None:
                    yield from self._offload_step(work, useful, logits, real_logits)
                elif len(batches) == 1:
                    yield from self._through_stages(batches[0], 0, work, useful, real_logits)
                else:
                    runs = [
                        env.process(self._through_stages(mb, i, work, useful, real_logits))
                        for i, mb in enumerate(batches)
                    ]
                    yield env.all_of(runs)
            if host_s and host.overlap and env.now < start + host_s:
                # Asynchronous scheduling: the host readied this step while the devices
                # ran the last one; the loop goes no faster than the host.
                yield env.timeout(start + host_s - env.now)
            replica.end_step()
            self._commit(step, work, start, env.now)

    # ------------------------------------------------------------------ pricing
    def _work(self, step: Step) -> tuple[Work, Work, int, int]:
        """The step's work as computed (padding and recomputation included), the useful
        part of it (real tokens computed for the first time), and the sequences that
        sample a token in each."""
        st = self.state
        window = st.window
        pt = pkv = completing = 0
        pp = 0.0
        ut = ukv = 0
        up = 0.0
        big_chunk, big_pairs = 0, 0.0  # one sequence's largest chunk (attention ranks)
        for req, chunk in step.prefills:
            done = req.prefilled
            pairs = causal_pairs(chunk, done, window)
            pt += chunk
            pp += pairs
            pkv += prefill_keys(chunk, done, window)
            big_chunk, big_pairs = max(big_chunk, chunk), max(big_pairs, pairs)
            first_new = max(done, min(req.computed, done + chunk))
            new = done + chunk - first_new
            if new:
                ut += new
                up += causal_pairs(new, first_new, window)
                ukv += prefill_keys(new, first_new, window)
            if done + chunk >= req.target:
                completing += 1
        ds = dkv = 0
        if step.decode:
            ds = st.decoders
            dkv = st.kv_sum
        if self.replica.recompute:
            return self._recompute_work(step, pt, pp, pkv, ds, dkv, completing)
        useful = Work(
            tokens=ut + ds,
            prefill_tokens=ut,
            prefill_pairs=up,
            prefill_kv_tokens=ukv,
            decode_seqs=ds,
            decode_kv_tokens=dkv,
        )
        if step.decode:
            ds += step.pad_decode_seqs
            dkv += step.pad_decode_kv
        pt += step.pad_prefill_tokens
        work = Work(
            tokens=pt + ds,
            prefill_tokens=pt,
            prefill_pairs=pp + step.pad_prefill_pairs,
            prefill_kv_tokens=pkv + step.pad_prefill_tokens,
            decode_seqs=ds,
            decode_kv_tokens=dkv,
            prefill_max_chunk=big_chunk,
            prefill_max_pairs=big_pairs,
        )
        real = (st.decoders if step.decode else 0) + completing
        return work, useful, ds + completing, real

    def _recompute_work(
        self, step: Step, pt: int, pp: float, pkv: int, ds: int, dkv: int, completing: int
    ) -> tuple[Work, Work, int, int]:
        """A step without a KV cache: each decoder runs its whole sequence again (its
        context and the token it just produced) as a prefill from position 0, and every
        position of every sequence computes logits. What it produces is what a cached
        step would (the useful work): one token per decoder."""
        st = self.state
        window = st.window
        rt = rp = 0.0
        rkv = 0
        if step.decode:
            for req in st.running.values():
                n = req.kv(st.step) + 1
                rt += n
                rp += causal_pairs(n, 0, window)
                rkv += prefill_keys(n, 0, window)
        tokens = pt + int(rt)
        work = Work(
            tokens=tokens,
            prefill_tokens=tokens,
            prefill_pairs=pp + rp,
            prefill_kv_tokens=pkv + rkv,
        )
        useful = Work(
            tokens=pt + ds,
            prefill_tokens=pt,
            prefill_pairs=pp,
            prefill_kv_tokens=pkv,
            decode_seqs=ds,
            decode_kv_tokens=dkv,
        )
        return work, useful, tokens, ds + completing

    def _begin(
        self,
        stage: Stage,
        work: Work,
        useful: Work,
        logits: int,
        real_logits: int,
        start: float,
        seconds: float,
        share: float = 1.0,
    ) -> None:
        """Stage opens an execution of `work` (a micro-batch's `share` of the step)."""
        cost = stage.cost
        last = stage.index == len(self.replica.stages) - 1
        model = cost.flops(useful, real_logits if last else 0) * share
        stage.begin(
            start,
            seconds,
            cost.flops(work, logits),
            model,
            cost.bytes(work),
            cost.step_comm_s(work),
        )

    def _end(self, stage: Stage, mb: int, work: Work, start: float, end: float) -> None:
        """Stage ends micro-batch `mb`'s execution: its counters and the pipeline record."""
        stage.end(end)
        replica = self.replica
        replica.recorder.stage_span(
            replica.index, stage.index, self.index, mb, start, end, _phase(work), work.tokens
        )

    def _through_stages(
        self, mb: MicroBatch, index: int, step_work: Work, useful: Work, real_logits: int
    ) -> Generator[Any, Any, None]:
        """One micro-batch through every stage in order, holding each stage while it
        computes and the links between stages while its activations cross them. A
        stage's TP collectives follow its compute (Megatron: no overlap) and hold the
        links they share with other traffic for as long as they run: one hold per
        execution, for the whole layer block's collectives."""
        env = self.env
        replica = self.replica
        stages = replica.stages
        last = len(stages) - 1
        work = mb.work
        share = work.tokens / step_work.tokens if step_work.tokens else 1.0
        for s, stage in enumerate(stages):
            logits = mb.logits if s == last else 0
            with stage.resource.request() as slot:
                yield slot
                start = env.now
                t = stage.cost.time(work, logits)
                self._begin(stage, work, useful, logits, real_logits, start, t, share)
                comm = stage.cost.step_comm_s(work) if stage.plan.shared else 0.0
                if comm > 0:
                    yield env.timeout(t - comm)
                    yield from replica.links.hold(stage.plan.shared, comm)
                else:
                    yield env.timeout(t)
                self._end(stage, index, work, start, env.now)
            if s < last:
                size = work.tokens * replica.act_bytes_per_token
                yield from replica.links.transfer(replica.plan.sends[s], size)

    def _offload_step(
        self, work: Work, useful: Work, logits: int, real_logits: int
    ) -> Generator[Any, Any, None]:
        """One step of FlexGen's block schedule: the step takes as long as its priced
        time, and each stream holds its link (PCIe each way, disk read, disk write) for
        as long as it carries data, all at once, so other traffic on those links queues
        behind them, and they behind it."""
        env = self.env
        stage = self.replica.stages[0]
        offload = self.replica.offload
        assert offload is not None
        start = env.now
        t, streams = offload.step(work, logits)
        self._begin(stage, work, useful, logits, real_logits, start, t)
        links = self.replica.links
        holds = [env.process(links.hold((edge,), s)) for edge, s in streams.items() if s > 0]
        yield env.timeout(t)
        if holds:
            yield env.all_of(holds)
        for edge, s in streams.items():
            links.charge((edge,), s)
        self._end(stage, 0, work, start, env.now)

    def _swap(self, step: Step) -> Generator[Any, Any, None]:
        size = step.swap_out_bytes + step.swap_in_bytes
        if size > 0:
            yield from self.replica.links.transfer(self.replica.plan.host, size)

    # ------------------------------------------------------------------ commit
    def _commit(self, step: Step, work: Work, start: float, end: float) -> None:
        st = self.state
        rec = self.replica.recorder
        tokens_out = st.decoders if step.decode else 0
        if step.decode:
            self.policy.grow(1)
            st.advance(1)
            for _, req in st.pop_finished():
                self._finish(req, end, req.kv0)
        for req, chunk in step.prefills:
            req.prefilled += chunk
            req.computed = max(req.computed, req.prefilled)
            if req.prefix >= 0:
                self.policy.cache_prefix(req)
            if req.prefilled < req.target:
                continue
            if req in st.prefilling:
                st.prefilling.remove(req)
            req.generated += 1
            tokens_out += 1
            if req.first_token_s < 0:
                req.first_token_s = end
            if req.generated >= req.output:
                self._finish(req, end, st.kept(req.target))
            elif self.replica.handoff is not None:
                self._hand_off(req)
            else:
                st.start_decode(req)
        rec.iteration(
            self.replica.index,
            self.index,
            start,
            end,
            1,
            work.prefill_tokens,
            work.decode_seqs,
            work.decode_kv_tokens,
            len(step.prefills),
            tokens_out,
            st.blocks.used,
            st.blocks.total,
        )

    def _hand_off(self, req: Req) -> None:
        """The first token is out: the request moves to a decode replica; its blocks
        here are freed when its KV has left."""
        self.state.outstanding -= 1
        self.replica.outstanding -= 1
        kept = self.state.kept(req.target)

        def release() -> None:
            self.policy.release(req, kept)

        assert self.replica.handoff is not None
        self.replica.handoff(req, self.replica.index, release)

    def _finish(self, req: Req, t: float, kept_tokens: int) -> None:
        req.state = DONE
        self.state.outstanding -= 1
        self.replica.outstanding -= 1
        self.policy.release(req, kept_tokens)
        self.replica.recorder.finish(req, t)

    # ------------------------------------------------------------------ leaps
    def _leap(self, step: Step, k: int) -> Generator[Any, Any, None]:
        """k identical decode steps as one timeout; an arrival (`wake`) interrupts it, and
        the leap is cut at the first step boundary at or after that moment."""
        env = self.env
        st = self.state
        stage = self.replica.stages[0]
        cost = stage.cost
        host = self.replica.host
        host_s = host.seconds(st.decoders, st.decoders)
        leap = Leap.plan(cost, st, step, k, env.now, host_s, host.overlap)
        self.replica.begin_step()
        stage.begin(
            leap.start,
            leap.duration(k),
            cost.decode_flops(leap.seqs, leap.kv0, leap.growth, k),
            cost.decode_flops(leap.real, leap.real_kv0, leap.real_growth, k),
            cost.decode_bytes(leap.seqs, leap.kv0, leap.growth, k),
            cost.comm_part_s(leap.seqs) * k,
        )
        done = k
        self._leaping = True
        try:
            yield env.timeout(leap.duration(k))
        except simpy.Interrupt:
            done = leap.steps_by(env.now)
            yield env.timeout(max(0.0, leap.end(done) - env.now))
        self._leaping = False
        self.replica.end_step()
        end = leap.end(done)
        stage.end(
            end,
            (
                cost.decode_flops(leap.seqs, leap.kv0, leap.growth, done),
                cost.decode_flops(leap.real, leap.real_kv0, leap.real_growth, done),
                cost.decode_bytes(leap.seqs, leap.kv0, leap.growth, done),
                cost.comm_part_s(leap.seqs) * done,
            ),
            busy_s=leap.device_s(done),
        )
        self.replica.recorder.stage_span(
            self.replica.index, 0, self.index, 0, leap.start, end, "decode", leap.seqs * done
        )
        # Blocks in use after each step, as stepping records them: growth as it happens
        # (paged policies), and the finishers' blocks freed after the last step.
        if self.policy.paged:
            after = leap.blocks_used(st.blocks, st.step, done)
        else:
            after = [st.blocks.used] * done
        self.policy.grow(done)
        base = st.step
        st.advance(done)
        for at, req in st.pop_finished():
            self._finish(req, leap.end(at - base), req.kv0)
        after[-1] = st.blocks.used
        self.replica.recorder.iteration(
            self.replica.index,
            self.index,
            leap.start,
            end,
            done,
            0,
            leap.seqs,
            leap.kv0,
            0,
            leap.real * done,
            st.blocks.used,
            st.blocks.total,
            leap.block_seconds(after),
            max(after),
        )


def _phase(work: Work) -> str:
    if work.prefill_tokens and work.decode_seqs:
        return "mixed"
    return "prefill" if work.prefill_tokens else "decode"
