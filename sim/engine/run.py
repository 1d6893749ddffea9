"""`simulate(scenario)`: build the cluster and replicas, wire the processes, run, collect.

Placement: replica r uses devices r·tp·pp … (r+1)·tp·pp − 1 of the cluster, stage s
of it the tp consecutive devices from r·tp·pp + s·tp. A replica's KV capacity is what
its most loaded device has left after weights and the activation workspace, in blocks;
with pp > 1 it is shared out among the pipeline's virtual engines.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simpy

from sim.analyze import layers_per_stage
from sim.cost import make_kernel
from sim.cost.collectives import CollectiveModel
from sim.cost.roofline import OpKernel
from sim.cost.stage import StageCost
from sim.engine.batching import POLICIES, PolicyContext
from sim.engine.kv_cache import BlockManager
from sim.engine.records import Recorder
from sim.engine.replica import Replica, Stage, Transfer
from sim.engine.request import Req
from sim.engine.router import ROUTERS
from sim.engine.state import ReplicaState
from sim.errors import LlmsimError
from sim.model import (
    Precision,
    Work,
    activation_workspace_bytes,
    embedding_weight_elems,
    kv_bytes_per_token_per_device,
    layer_plan,
    layer_weight_elems,
    valid_tp,
)
from sim.scenario import Scenario
from sim.topology import Cluster, build_cluster
from sim.workload import Arrivals, generate

ROUTER_STREAM = 1000  # spawn key of the router's random stream (workload streams are below)


@dataclass
class Results:
    scenario: Scenario
    summary: dict[str, Any]
    requests: pd.DataFrame
    iterations: pd.DataFrame
    devices: pd.DataFrame
    links: pd.DataFrame
    stages: pd.DataFrame
    wall_s: float
    events: int


class LinkPool:
    """One SimPy resource per directed link, created when a transfer first needs it."""

    def __init__(self, env: simpy.Environment, cluster: Cluster):
        self.env = env
        self.cluster = cluster
        self.resources: dict[tuple[str, str], simpy.Resource] = {}
        self.busy: dict[tuple[str, str], float] = {}

    def path(self, src: str, dst: str) -> Transfer:
        route = self.cluster.route(src, dst)
        edges = tuple(sorted(route.edges))
        links = [self.resources.setdefault(e, simpy.Resource(self.env, 1)) for e in edges]
        return Transfer(route, links, edges, self.busy)


@dataclass(frozen=True)
class ReplicaPlan:
    """Sizes shared by every replica of a scenario."""

    stages: list[int]  # layers per stage
    weight_bytes: list[float]  # per device, per stage
    workspace_bytes: float
    kv_bytes_per_token: list[float]  # per device, per stage
    blocks: int  # KV blocks of a whole replica
    block_bytes: float  # of the most KV-loaded stage's device


def stage_layers(s: Scenario, kernel: OpKernel | None = None) -> list[int]:
    """Layers per pipeline stage: given, even, or balanced by cost (the first stage also
    runs the embedding and the last the LM head, so they take fewer layers)."""
    model, par = s.model, s.parallel
    if par.layers_per_stage is not None:
        return list(par.layers_per_stage)
    even = layers_per_stage(model.n_layers, par.pp)
    if par.pipeline.layer_split == "even" or par.pp == 1 or kernel is None:
        return even
    # Balance a reference step: a decode of 64 sequences at 1024 tokens of context.
    plan = layer_plan(model, par.tp, kernel.precision, par.attention)
    work = Work.decode(64, 1024)
    one = StageCost(plan, 1, kernel, None, first=False, last=False).time(work, 0)
    first = StageCost(plan, 0, kernel, None, first=True, last=False).time(work, 0)
    last = StageCost(plan, 0, kernel, None, first=False, last=True).time(work, 64)
    return balance_layers(model.n_layers, par.pp, one, first, last)


def balance_layers(
    n_layers: int, pp: int, per_layer: float, first: float, last: float
) -> list[int]:
    """Split n_layers over pp stages (each ≥ 1) to minimise the slowest stage, where
    stage cost = layers · per_layer (+ first on stage 0, + last on the last stage)."""
    extra = [first if i == 0 else 0.0 for i in range(pp)]
    extra[-1] += last
    lo, hi = 0.0, n_layers * per_layer + first + last
    for _ in range(60):  # bisection on the slowest stage's cost
        mid = (lo + hi) / 2
        room = [
            max(1, math.floor((mid - e) / per_layer + 1e-9)) if per_layer > 0 else n_layers
            for e in extra
        ]
        if sum(room) >= n_layers and all((mid - e) >= per_layer for e in extra):
            hi = mid
        else:
            lo = mid
    room = [max(1, math.floor((hi - e) / per_layer + 1e-9)) for e in extra]
    split = [1] * pp  # fill the cheapest-to-extend stages up to their room
    left = n_layers - pp
    for i in sorted(range(pp), key=lambda i: extra[i]):
        take = min(left, room[i] - 1)
        split[i] += take
        left -= take
    split[0] += left  # only when the bisection met rounding at the boundary
    return split


def plan_replica(
    s: Scenario, cluster: Cluster, precision: Precision, kernel: OpKernel | None = None
) -> ReplicaPlan:
    model, par = s.model, s.parallel
    params = s.scheduler.policy_params()
    stages = stage_layers(s, kernel)
    layer_w = layer_weight_elems(model, par.tp, par.attention) * precision.w_bytes
    emb = embedding_weight_elems(model, par.tp) * precision.w_bytes
    weights = []
    for i, layers in enumerate(stages):
        w = layers * layer_w
        if par.pp == 1:
            w += emb
        elif i == 0 or i == par.pp - 1:
            w += emb / 2 if not model.tied_embeddings else emb
        weights.append(w)
    cap = getattr(params, "max_num_batched_tokens", None) or max(
        params.max_model_len or model.max_seq_len, 2048
    )
    cap = min(cap, getattr(params, "token_budget", cap))
    workspace = activation_workspace_bytes(model, cap, par.tp, precision)
    per_token = [
        kv_bytes_per_token_per_device(model, par.tp, n, precision.kv, par.attention) for n in stages
    ]
    usable = cluster.device.memory_bytes * params.gpu_memory_utilization
    bs = params.block_size
    blocks = min(
        math.floor((usable - w - workspace) / (bs * t))
        for w, t in zip(weights, per_token, strict=True)
    )
    if blocks <= 0:
        worst = max(weights)
        need = worst + workspace
        raise s.error(
            f"{model.name} does not fit: a device needs {need / 1e9:.1f} GB for weights "
            f"({worst / 1e9:.1f} GB) and activations ({workspace / 1e9:.1f} GB) before any KV "
            f"cache, but {cluster.device.name} offers {usable / 1e9:.1f} GB "
            f"({params.gpu_memory_utilization:.0%} of {cluster.device.memory_bytes / 1e9:.0f} GB); "
            + _what_would_fit(s, usable, precision),
            "parallel",
        )
    return ReplicaPlan(stages, weights, workspace, per_token, blocks, bs * max(per_token))


def _what_would_fit(s: Scenario, usable: float, precision: Precision) -> str:
    """A suggestion: the smallest tensor-parallel degree whose weights leave room."""
    model = s.model
    for tp in valid_tp(model, limit=64):
        if tp <= s.parallel.tp:
            continue
        per_layer = layer_weight_elems(model, tp) * precision.w_bytes
        layers = max(layers_per_stage(model.n_layers, s.parallel.pp))
        weights = layers * per_layer + embedding_weight_elems(model, tp) * precision.w_bytes
        if weights < 0.9 * usable:
            return f"tp={tp} would leave room for KV cache (or raise pp, or shrink the dtype)"
    return "raise pp, use more devices, or a smaller weight dtype"


def _stage_cost_key(col: CollectiveModel | None) -> tuple[float, ...]:
    if col is None:
        return ()
    return (col.all_reduce_s(2.0**10), col.all_reduce_s(2.0**20))


def build_replicas(
    s: Scenario,
    env: simpy.Environment,
    cluster: Cluster,
    recorder: Recorder,
    pool: LinkPool,
) -> tuple[list[Replica], ReplicaPlan]:
    precision = s.precision.build()
    model, par = s.model, s.parallel
    plan = layer_plan(model, par.tp, precision, par.attention)
    try:
        kernel, profile = make_kernel(cluster.device, precision, s.engine.cost)
    except LlmsimError as exc:
        raise s.error(exc.message, exc.key or "engine.cost") from None
    sizes = plan_replica(s, cluster, precision, kernel)
    schedule = par.pipeline.build(par.pp)
    fits = profile.fit.collectives if profile is not None else ()
    params = s.scheduler.policy_params()
    policy_cls = POLICIES[s.scheduler.policy]
    max_model_len = params.max_model_len or model.max_seq_len
    swap_bytes = getattr(params, "swap_space_bytes", 0.0)
    shared_costs: dict[tuple[Any, ...], StageCost] = {}
    replicas = []
    engines_per = schedule.engines()
    for r in range(par.replicas):
        base = r * par.devices_per_replica
        stages = []
        for i, layers in enumerate(sizes.stages):
            devices = tuple(range(base + i * par.tp, base + (i + 1) * par.tp))
            col = CollectiveModel(cluster, devices, fits) if par.tp > 1 else None
            key = (i, layers, *_stage_cost_key(col))
            cost = shared_costs.get(key)
            if cost is None:
                first, last = i == 0, i == len(sizes.stages) - 1
                cost = StageCost(plan, layers, kernel, col, first=first, last=last)
                shared_costs[key] = cost
            stages.append(Stage(i, devices, cost, simpy.Resource(env, 1)))
        sends = [
            pool.path(f"dev{stages[i].devices[0]}", f"dev{stages[i + 1].devices[0]}")
            for i in range(len(stages) - 1)
        ]
        host = pool.path(f"dev{base}", f"host{cluster.node_of(base)}")
        engines = []
        for _ in range(engines_per):
            blocks = BlockManager(
                sizes.blocks // engines_per, params.block_size, getattr(params, "watermark", 0.0)
            )
            state = ReplicaState(r, blocks, model.sliding_window, policy_cls.paged)
            ctx = PolicyContext(
                block_bytes=sizes.block_bytes,
                max_model_len=max_model_len,
                swap_blocks=int(swap_bytes // sizes.block_bytes) // engines_per,
            )
            engines.append((state, policy_cls(params, state, ctx)))
        act_bytes = model.d_model * precision.a_bytes
        replicas.append(
            Replica(
                env, r, stages, engines, recorder, sends, host, s.engine.leap, act_bytes, schedule
            )
        )
    return replicas, sizes


def _arrive(
    env: simpy.Environment,
    arrivals: Arrivals,
    replicas: list[Replica],
    route: Callable[[], int],
) -> Generator[Any, Any, None]:
    chunk = 1 << 16  # plain Python numbers are faster to use; convert a slice at a time
    for first in range(0, len(arrivals), chunk):
        window = slice(first, first + chunk)
        times = arrivals.arrival_s[window].tolist()
        prompts = arrivals.prompt_tokens[window].tolist()
        outputs = arrivals.output_tokens[window].tolist()
        classes = arrivals.class_index[window].tolist()
        for j, t in enumerate(times):
            if t > env.now:
                yield env.timeout(t - env.now)
            req = Req(first + j, classes[j], t, prompts[j], outputs[j])
            replicas[route()].admit(req)
    for rep in replicas:
        rep.arrivals_done()


def _progress(total: int, enabled: bool | None) -> tuple[Callable[[int], None] | None, Any]:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total < 2000:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="req", desc="simulating", leave=False, file=sys.stderr)
    every = max(1, total // 200)

    def update(done: int) -> None:
        if done % every == 0 or done == total:
            bar.update(done - bar.n)

    return update, bar


def simulate(
    scenario: Scenario, *, progress: bool | None = False, records: bool | None = None
) -> Results:
    """Run one scenario to completion (or `engine.until_s`) and collect its records.

    `records=False` keeps no per-iteration rows (the summary does not need them), so a
    long run's memory holds only the per-request columns; the default follows the
    scenario's `output.records`."""
    from sim.metrics import (
        device_frame,
        link_frame,
        pipeline_summary,
        resource_summary,
        summarize,
    )

    wall0 = time.perf_counter()
    try:
        arrivals = generate(scenario.workload, scenario.seed, scenario.base_dir)
    except LlmsimError as exc:
        raise exc.at(file=exc.file or scenario.file) from None
    env = simpy.Environment()
    cluster = build_cluster(scenario.cluster)
    on_progress, bar = _progress(len(arrivals), progress)
    keep = scenario.output.records if records is None else records
    recorder = Recorder(len(arrivals), on_progress, keep_iterations=keep)
    pool = LinkPool(env, cluster)
    replicas, sizes = build_replicas(scenario, env, cluster, recorder, pool)
    rng = np.random.default_rng(np.random.SeedSequence(scenario.seed, spawn_key=(ROUTER_STREAM,)))
    router = ROUTERS[scenario.router.policy](rng)

    def route() -> int:
        return router.next_replica(replicas)

    done = env.event()

    def all_closed() -> None:
        if not done.triggered:
            done.succeed()

    recorder.all_closed = all_closed
    for rep in replicas:
        rep.start()
    env.process(_arrive(env, arrivals, replicas, route))
    events = _count_events(env)
    if len(arrivals):
        until: Any = done
        if scenario.engine.until_s is not None:
            until = done | env.timeout(scenario.engine.until_s)
        env.run(until=until)
    if bar is not None:
        bar.close()
    requests = recorder.requests_frame(
        arrivals.arrival_s,
        arrivals.prompt_tokens,
        arrivals.output_tokens,
        arrivals.class_index,
        arrivals.class_names,
    )
    iterations = recorder.iterations_frame()
    duration = float(env.now)
    devices = device_frame(scenario, cluster, replicas, sizes, duration)
    links = link_frame(cluster, replicas, pool, duration)
    summary = summarize(scenario, requests, recorder, devices, links, duration)
    summary.update(pipeline_summary(replicas, duration))
    summary.update(resource_summary(devices, links))
    wall = time.perf_counter() - wall0
    stages = recorder.stages_frame()
    return Results(scenario, summary, requests, iterations, devices, links, stages, wall, events())


def _count_events(env: simpy.Environment) -> Callable[[], int]:
    """Count processed events cheaply by wrapping `env.step` (for the benchmark)."""
    count = [0]
    step = env.step

    def counting_step() -> None:
        count[0] += 1
        step()

    env.step = counting_step  # type: ignore[method-assign]
    return lambda: count[0]
