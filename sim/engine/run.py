"""`run(deployment)`: the lifecycle of one simulation. Wire the planned replicas into
SimPy processes and resources, send the arrivals through the router, run the clock to
the last request (or `engine.until_s`), and collect the records.

Nothing here decides what runs where (sim.plan did) or computes a statistic
(sim.results does, from the records returned).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from sim.engine.disagg import KVHandoff
from sim.engine.kv_cache import BlockManager, Tally
from sim.engine.policies.base import PolicyContext
from sim.engine.records import Recorder, RunRecords, StageRecord
from sim.engine.replica import Handoff, Replica
from sim.engine.request import Req
from sim.engine.resources import Links
from sim.engine.state import ReplicaState
from sim.plan.deploy import Deployment, ReplicaPlan
from sim.registry import POLICIES, ROUTERS, SCHEDULES
from sim.workload.arrivals import Arrivals

ROUTER_STREAM = 1000  # spawn key of the router's random stream (workload streams are below)


def router_rng(seed: int, offset: int = 0) -> np.random.Generator:
    """The router's own random stream (the decode pool's router takes the next one)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ROUTER_STREAM + offset,)))


def build_replica(
    d: Deployment,
    env: simpy.Environment,
    plan: ReplicaPlan,
    recorder: Recorder,
    links: Links,
    handoff: Handoff | None = None,
) -> Replica:
    """A planned replica's SimPy side: its stages, virtual engines and their policies."""
    s = d.scenario
    model = s.model
    pipe = s.parallel.pipeline
    schedule = SCHEDULES[pipe.schedule](
        len(plan.stages), pipe.microbatches, pipe.prefill_microbatches, pipe.decode_microbatches
    )
    params = s.scheduler.policy_params()
    policy_cls = POLICIES[s.scheduler.policy]
    memory = plan.memory
    engines_per = schedule.engines()
    swap_bytes = getattr(params, "swap_space_bytes", 0.0)
    engines = []
    tally = Tally()  # the replica's blocks in use, over all its engines
    for _ in range(engines_per):
        blocks = BlockManager(
            memory.blocks // engines_per,
            params.block_size,
            getattr(params, "watermark", 0.0),
            tally,
        )
        if params.prefix_caching:
            cache = blocks.enable_prefix_cache()
            tiers = params.kv_tiers
            if tiers is not None:
                caps = [tiers.host_bytes] + ([tiers.disk_bytes] if tiers.disk_bytes > 0 else [])
                cache.enable_tiers([int(c // memory.block_bytes) // engines_per for c in caps])
        state = ReplicaState(blocks, model.sliding_window, policy_cls.paged)
        ctx = PolicyContext(
            block_bytes=memory.block_bytes,
            max_model_len=params.max_model_len or model.max_seq_len,
            swap_blocks=int(swap_bytes // memory.block_bytes) // engines_per,
            reserve=s.runtime.admission == "reserve",
        )
        engines.append((state, policy_cls(params, state, ctx)))
    act_bytes = model.d_model * d.precision.io_bytes
    return Replica(
        env,
        plan,
        engines,
        recorder,
        links,
        s.engine.leap and s.runtime.kv_cache == "paged",
        act_bytes,
        schedule,
        s.runtime.host.per_rank(s.parallel.dp_attention),
        handoff,
        recompute=s.runtime.kv_cache == "none",
    )


def _arrive(
    env: simpy.Environment,
    arrivals: Arrivals,
    replicas: list[Replica],
    route: Callable[[Req], int],
) -> Generator[Any, Any, None]:
    chunk = 1 << 16  # plain Python numbers are faster to use; convert a slice at a time
    for first in range(0, len(arrivals), chunk):
        window = slice(first, first + chunk)
        times = arrivals.arrival_s[window].tolist()
        prompts = arrivals.prompt_tokens[window].tolist()
        outputs = arrivals.output_tokens[window].tolist()
        if arrivals.prefix_id is not None and arrivals.prefix_tokens is not None:
            ids = arrivals.prefix_id[window].tolist()
            lengths = arrivals.prefix_tokens[window].tolist()
        else:
            ids = lengths = [0] * len(times)
        for j, t in enumerate(times):
            if t > env.now:
                yield env.timeout(t - env.now)
            if lengths[j]:
                req = Req(first + j, t, prompts[j], outputs[j], ids[j], lengths[j])
            else:
                req = Req(first + j, t, prompts[j], outputs[j])
            replicas[route(req)].admit(req)
    for rep in replicas:
        rep.arrivals_done()


def _sessions(
    env: simpy.Environment,
    arrivals: Arrivals,
    replicas: list[Replica],
    route: Callable[[Req], int],
    recorder: Recorder,
) -> Generator[Any, Any, None]:
    """Closed-loop arrivals (sim.workload.sessions): each session's first turn at its
    start; turn k + 1 when turn k finishes or is rejected, after its think time (drawn
    with the workload, so a run is the same in any process)."""
    assert arrivals.session_id is not None and arrivals.think_s is not None
    starts = arrivals.arrival_s.tolist()
    prompts = arrivals.prompt_tokens.tolist()
    outputs = arrivals.output_tokens.tolist()
    sessions = arrivals.session_id.tolist()
    think = arrivals.think_s.tolist()
    n = len(starts)
    arrived = recorder.arrived_s

    def admit(i: int) -> None:
        t = env.now
        arrived[i] = t
        req = Req(i, t, prompts[i], outputs[i], sessions[i], prompts[i])
        replicas[route(req)].admit(req)

    def release(i: int) -> Generator[Any, Any, None]:
        yield env.timeout(think[i])
        admit(i)

    def closed(req: Req) -> None:
        nxt = req.id + 1
        if nxt < n and sessions[nxt] == sessions[req.id]:
            env.process(release(nxt))

    recorder.on_close = closed
    for i in range(n):
        if i and sessions[i] == sessions[i - 1]:
            continue  # a later turn: released by its predecessor
        if starts[i] > env.now:
            yield env.timeout(starts[i] - env.now)
        admit(i)
    # Later turns keep arriving, but they wait on answers: a static batch must not wait
    # for them to fill it once every session has started.
    for rep in replicas:
        rep.arrivals_done()


def run(
    d: Deployment,
    arrivals: Arrivals,
    *,
    on_progress: Callable[[int], None] | None = None,
    records: bool = True,
) -> RunRecords:
    """Simulate `arrivals` on the deployment to completion (or `engine.until_s`).

    `records=False` keeps no per-iteration rows (a summary does not need them), so a
    long run's memory holds only the per-request columns."""
    wall0 = time.perf_counter()
    s = d.scenario
    env = simpy.Environment()
    recorder = Recorder(len(arrivals), on_progress, keep_iterations=records)
    links = Links(env)
    handoff = None
    dis = d.disaggregation
    replicas: list[Replica] = []
    if dis is None:
        replicas = [build_replica(d, env, plan, recorder, links) for plan in d.replicas]
    else:
        decode = [build_replica(d, env, d.replicas[i], recorder, links) for i in dis.decode]
        handoff = KVHandoff(env, decode, ROUTERS[dis.router](router_rng(s.seed, 1)), dis, links)
        prefill = [
            build_replica(d, env, d.replicas[i], recorder, links, handoff.send) for i in d.front
        ]
        replicas = prefill + decode
    front = [replicas[i] for i in d.front]
    router = ROUTERS[s.router.policy](router_rng(s.seed))

    def route(req: Req) -> int:
        return router.next_replica(front, req)

    done = env.event()

    def all_closed() -> None:
        if not done.triggered:
            done.succeed()

    recorder.all_closed = all_closed
    for rep in replicas:
        rep.start()
    if arrivals.session_id is not None:
        env.process(_sessions(env, arrivals, front, route, recorder))
    else:
        env.process(_arrive(env, arrivals, front, route))
    events = _count_events(env)
    if len(arrivals):
        until: Any = done
        if s.engine.until_s is not None:
            until = done | env.timeout(s.engine.until_s)
        env.run(until=until)
    for rep in replicas:  # a run cut short: charge what ran before the cut
        for st in rep.stages:
            st.settle(env.now)
        rep.settle(env.now)
    stages = [
        StageRecord(rep.index, st.index, st.busy_s, st.comm_s, st.flops, st.model_flops, st.bytes)
        for rep in replicas
        for st in rep.stages
    ]
    return RunRecords(
        deployment=d,
        arrivals=arrivals,
        recorder=recorder,
        stages=stages,
        active_s=[rep.active_s for rep in replicas],
        kv_peak_blocks=[rep.tally.peak for rep in replicas],
        link_busy=dict(links.busy),
        duration_s=float(env.now),
        events=events(),
        wall_s=time.perf_counter() - wall0,
        kv_transfers=(handoff.transfers, handoff.bytes_moved) if handoff is not None else None,
        kv_tiers=_kv_tiers(replicas),
    )


def _kv_tiers(replicas: list[Replica]) -> dict[str, dict[str, float]] | None:
    """Tiered KV's traffic over the run, per tier (host, disk), summed over engines;
    peak and capacity are one engine's (the largest peak)."""
    engines = [e for rep in replicas for e in rep.engines]
    caches = [e.tiers for e in engines if e.tiers is not None]
    if not caches:
        return None
    block = engines[0].policy.ctx.block_bytes
    size = engines[0].state.blocks.block_size
    out: dict[str, dict[str, float]] = {}
    for tier, name in enumerate(("host", "disk")[: len(caches[0].caps)]):
        hits = sum(c.hits_tier[tier] for c in caches)
        out[name] = {
            "capacity_bytes": caches[0].caps[tier] * block,
            "peak_bytes": max(c.tier_peak[tier] for c in caches) * block,
            "hit_blocks": hits,
            "hit_tokens": hits * size,
            "written_bytes": sum(c.written_tier[tier] for c in caches) * block,
            "reload_bytes": sum(e.reload_bytes[tier] for e in engines if e.tiers is not None),
            "reload_s": sum(e.reload_s[tier] for e in engines if e.tiers is not None),
        }
    return out


def _count_events(env: simpy.Environment) -> Callable[[], int]:
    """Count processed events cheaply by wrapping `env.step` (for the benchmark)."""
    count = [0]
    step = env.step

    def counting_step() -> None:
        count[0] += 1
        step()

    env.step = counting_step  # type: ignore[method-assign]
    return lambda: count[0]
