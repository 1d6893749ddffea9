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

from sim.arith.ops import (
    Precision,
    Work,
    activation_workspace_bytes,
    embedding_weight_elems,
    kv_bytes_per_token,
    kv_bytes_per_token_per_device,
    layer_plan,
    layer_weight_elems,
    stage_weights,
    valid_tp,
)
from sim.cost import make_kernel
from sim.cost.layouts import Layout, build_layout, compute_attention, layout_weights
from sim.cost.roofline import OpKernel
from sim.cost.stage import StageCost
from sim.cost.topology import Cluster, build_cluster, join_clusters
from sim.engine.disagg import KVHandoff, KVPath
from sim.engine.kv_cache import BlockManager
from sim.engine.offload import OffloadExecutor, check_capacity
from sim.engine.policies.base import POLICIES, PolicyContext, step_token_cap
from sim.engine.records import Recorder
from sim.engine.replica import Replica, Stage, Transfer
from sim.engine.request import Req
from sim.engine.router import ROUTERS
from sim.engine.state import ReplicaState
from sim.errors import LlmsimError
from sim.plan.analyze import layers_per_stage
from sim.spec import catalog
from sim.spec.hardware import LinkSpec
from sim.spec.offload import Machine
from sim.spec.scenario import Scenario
from sim.spec.workload import Arrivals, generate

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
    """One SimPy resource per directed link, created when a transfer first needs it.

    Views of one pool (`view`) share its resources: a second cluster joined to the
    first (a disaggregated pool on other hardware) names its links with a prefix, so
    every transfer that crosses a link, whichever cluster routed it, queues on the same
    resource."""

    def __init__(self, env: simpy.Environment, cluster: Cluster, prefix: str = ""):
        self.env = env
        self.cluster = cluster
        self.prefix = prefix
        self.resources: dict[tuple[str, str], simpy.Resource] = {}
        self.busy: dict[tuple[str, str], float] = {}
        self.specs: dict[tuple[str, str], LinkSpec] = {}  # every link a route has named

    def view(self, cluster: Cluster, prefix: str) -> LinkPool:
        other = LinkPool(self.env, cluster, prefix)
        other.resources, other.busy, other.specs = self.resources, self.busy, self.specs
        return other

    def name(self, edge: tuple[str, str], spec: LinkSpec) -> tuple[str, str]:
        """This view's name of one of its cluster's links, remembered with its spec."""
        named = (self.prefix + edge[0], self.prefix + edge[1])
        self.specs.setdefault(named, spec)
        return named

    def resource(self, edge: tuple[str, str]) -> simpy.Resource:
        found = self.resources.get(edge)
        if found is None:
            found = self.resources[edge] = simpy.Resource(self.env, 1)
        return found

    def path(self, src: str, dst: str) -> Transfer:
        route = self.cluster.route(src, dst)
        named = tuple(sorted(self.name(e, self.cluster.link(*e)) for e in route.edges))
        links = [self.resource(e) for e in named]
        return Transfer(route, links, named, self.busy)


@dataclass(frozen=True)
class ReplicaPlan:
    """Sizes shared by every replica of a scenario."""

    stages: list[int]  # layers per stage
    weight_bytes: list[float]  # per device, per stage
    workspace_bytes: float
    kv_bytes_per_token: list[float]  # per device, per stage
    blocks: int  # KV blocks of a whole replica
    block_bytes: float  # of the most KV-loaded stage's device


def plan_attention(s: Scenario) -> str:
    """How the compute plan and the KV cache split attention (see `compute_attention`):
    the one answer every sizing and pricing of a replica uses."""
    par = s.parallel
    return compute_attention(par.tp_layout, s.model, par.tp, par.attention)


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
    plan = layer_plan(model, par.tp, kernel.precision, plan_attention(s))
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
    layer_w, layout_workspace = layout_weights(
        par.tp_layout, model, par.tp, precision, par.attention
    )
    emb = embedding_weight_elems(model, par.tp) * precision.w_bytes
    weights = stage_weights(stages, layer_w, emb, model.tied_embeddings)
    cap = step_token_cap(params, params.max_model_len or model.max_seq_len)
    workspace = activation_workspace_bytes(model, cap, par.tp, precision) + layout_workspace
    attention = plan_attention(s)
    per_token = [
        kv_bytes_per_token_per_device(model, par.tp, n, precision, attention) for n in stages
    ]
    usable = cluster.device.memory_bytes * params.gpu_memory_utilization
    bs = params.block_size
    if s.offload is not None:  # tiers are checked by the offload plan; KV may live anywhere
        # weight_bytes then holds everything the placement keeps on the GPU at its peak.
        gpu = offload_capacity(s, cluster, precision)
        weights = [gpu]
        blocks = (1 << 40) // bs
        return ReplicaPlan(stages, weights, 0.0, per_token, blocks, bs * max(per_token))
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


def offload_machine(cluster: Cluster) -> Machine:
    """The PCIe, disk, host DRAM and host CPU an offloaded GPU works with."""
    node = cluster.node_spec
    if node is None or node.host.disk is None:
        raise LlmsimError(
            f"cluster {cluster.spec.name} has no host disk; offloading needs a node with "
            "`host.disk` (e.g. t4-flexgen)",
            key="offload",
        )
    disk = node.host.disk
    cpu_name = node.host.cpu or "host-cpu"
    return Machine(
        gpu=cluster.device,
        cpu=catalog.load_device(cpu_name),
        h2d_bytes_per_s=node.pcie.bandwidth_bytes_per_s,
        d2h_bytes_per_s=node.pcie.bandwidth_bytes_per_s,
        disk_read_bytes_per_s=disk.read_bandwidth_bytes_per_s,
        disk_write_bytes_per_s=disk.write_bandwidth_bytes_per_s,
        cpu_bytes=node.host.dram_bytes,
        disk_bytes=disk.capacity_bytes,
    )


def offload_capacity(s: Scenario, cluster: Cluster, precision: Precision) -> float:
    """The GPU bytes an offload placement holds at peak, after checking every tier."""
    assert s.offload is not None
    arrivals = generate(s.workload, s.seed, s.base_dir)
    prompt = int(arrivals.prompt_tokens.max()) if len(arrivals) else 1
    output = int(arrivals.output_tokens.max()) if len(arrivals) else 1
    params = s.scheduler.policy_params()
    try:
        need = check_capacity(
            s.model,
            precision,
            s.offload,
            offload_machine(cluster),
            prompt,
            output,
            cluster.device.memory_bytes * params.gpu_memory_utilization,
        )
    except LlmsimError as exc:
        raise s.error(exc.message, exc.key or "offload") from None
    return need["gpu"]


def _what_would_fit(s: Scenario, usable: float, precision: Precision) -> str:
    """A suggestion: the smallest tensor-parallel degree whose weights leave room."""
    model = s.model
    for tp in valid_tp(model, limit=64):
        if tp <= s.parallel.tp:
            continue
        stages = layers_per_stage(model.n_layers, s.parallel.pp)
        per_layer, emb = layer_weight_elems(model, tp), embedding_weight_elems(model, tp)
        weights = max(stage_weights(stages, per_layer, emb, model.tied_embeddings))
        if weights * precision.w_bytes < 0.9 * usable:
            return f"tp={tp} would leave room for KV cache (or raise pp, or shrink the dtype)"
    return "raise pp, use more devices, or a smaller weight dtype"


def _stage_cost_key(layout: Layout | None) -> tuple[float, ...]:
    """Stages whose communication costs the same share one StageCost (and its memo)."""
    if layout is None:
        return ()
    return (layout.layer_comm_s(1), layout.layer_comm_s(1024))


def build_replicas(
    s: Scenario,
    env: simpy.Environment,
    cluster: Cluster,
    recorder: Recorder,
    pool: LinkPool,
    *,
    first_device: int = 0,
    first_index: int = 0,
    role: str = "both",
) -> tuple[list[Replica], ReplicaPlan]:
    """`s.parallel.replicas` replicas on `cluster` from device `first_device` on."""
    precision = s.precision.build()
    model, par = s.model, s.parallel
    plan = layer_plan(model, par.tp, precision, plan_attention(s))
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
    for r in range(first_index, first_index + par.replicas):
        base = first_device + (r - first_index) * par.devices_per_replica
        stages = []
        for i, layers in enumerate(sizes.stages):
            devices = tuple(range(base + i * par.tp, base + (i + 1) * par.tp))
            layout = (
                build_layout(
                    par.tp_layout, model, par.tp, precision, cluster, devices, fits, par.attention
                )
                if par.tp > 1
                else None
            )
            key = (i, layers, *_stage_cost_key(layout))
            cost = shared_costs.get(key)
            if cost is None:
                first, last = i == 0, i == len(sizes.stages) - 1
                cost = StageCost(plan, layers, kernel, layout, first=first, last=last)
                shared_costs[key] = cost
            links = layout.links() if layout is not None else ()
            stages.append(Stage(i, devices, cost, simpy.Resource(env, 1), links))
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
            state = ReplicaState(blocks, model.sliding_window, policy_cls.paged)
            ctx = PolicyContext(
                block_bytes=sizes.block_bytes,
                max_model_len=max_model_len,
                swap_blocks=int(swap_bytes // sizes.block_bytes) // engines_per,
            )
            engines.append((state, policy_cls(params, state, ctx)))
        act_bytes = model.d_model * precision.a_bytes
        replica = Replica(
            env, r, stages, engines, recorder, sends, host, s.engine.leap, act_bytes, schedule
        )
        replica.role, replica.device, replica.sizes = role, cluster.device, sizes
        replica.links = pool
        if s.offload is not None:
            replica.offload = OffloadExecutor(
                model,
                precision,
                s.offload,
                offload_machine(cluster),
                stages[0].cost,
                pool,
            )
        replicas.append(replica)
    return replicas, sizes


POOL_PREFIX = {"prefill": "p:", "decode": "d:"}


def build_disaggregated(
    s: Scenario,
    env: simpy.Environment,
    cluster: Cluster,
    recorder: Recorder,
    pool: LinkPool,
) -> tuple[list[Replica], list[Replica], KVHandoff]:
    """The prefill and decode pools, and the KV handoff between them."""
    dis = s.disaggregation
    assert dis is not None
    built: dict[str, tuple[list[Replica], Cluster, str]] = {}
    next_device = 0
    for role, spec in (("prefill", dis.prefill), ("decode", dis.decode)):
        if spec.cluster is None:
            on, prefix, first = cluster, "", next_device
            next_device += spec.devices
        else:
            on, prefix, first = build_cluster(spec.cluster), POOL_PREFIX[role], 0
        par = s.parallel.model_copy(
            update={
                "tp": spec.tp,
                "pp": spec.pp,
                "replicas": spec.replicas,
                "layers_per_stage": None,
            }
        )
        pool_scenario = s.model_copy(update={"parallel": par})
        try:
            reps, _ = build_replicas(
                pool_scenario,
                env,
                on,
                recorder,
                pool.view(on, prefix),
                first_device=first,
                role=role,
                first_index=0 if role == "prefill" else dis.prefill.replicas,
            )
        except LlmsimError as exc:
            key = f"disaggregation.{role}" if exc.key in (None, "parallel") else exc.key
            raise LlmsimError(exc.message, file=exc.file, key=key) from None
        built[role] = (reps, on, prefix)
    (prefill, p_cluster, p_prefix), (decode, d_cluster, d_prefix) = (
        built["prefill"],
        built["decode"],
    )
    graph = (
        p_cluster
        if p_cluster is d_cluster
        else join_clusters([(p_cluster, p_prefix), (d_cluster, d_prefix)])
    )
    paths = {}
    for src in prefill:
        for dst in decode:
            try:
                paths[(src.index, dst.index)] = KVPath(
                    graph,
                    [f"{p_prefix}dev{d}" for st in src.stages for d in st.devices],
                    [f"{d_prefix}dev{d}" for st in dst.stages for d in st.devices],
                    pool,
                )
            except LlmsimError as exc:
                raise s.error(exc.message, exc.key or "disaggregation") from None
    precision = s.precision.build()
    rng = np.random.default_rng(np.random.SeedSequence(s.seed, spawn_key=(ROUTER_STREAM + 1,)))
    layerwise = 1.0 / s.model.n_layers if dis.transfer == "layerwise" else None
    handoff = KVHandoff(
        env,
        decode,
        ROUTERS[dis.decode_router](rng),
        paths,
        kv_bytes_per_token(s.model, precision),
        layerwise,
        pool.busy,
    )
    for rep in prefill:
        rep.handoff = handoff.send
    return prefill, decode, handoff


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
        for j, t in enumerate(times):
            if t > env.now:
                yield env.timeout(t - env.now)
            req = Req(first + j, t, prompts[j], outputs[j])
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
    from sim.results.summary import (
        cost_summary,
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
    handoff = None
    if scenario.disaggregation is None:
        replicas, _ = build_replicas(scenario, env, cluster, recorder, pool)
        front = replicas
    else:
        front, decode, handoff = build_disaggregated(scenario, env, cluster, recorder, pool)
        replicas = front + decode
    rng = np.random.default_rng(np.random.SeedSequence(scenario.seed, spawn_key=(ROUTER_STREAM,)))
    router = ROUTERS[scenario.router.policy](rng)

    def route() -> int:
        return router.next_replica(front)

    done = env.event()

    def all_closed() -> None:
        if not done.triggered:
            done.succeed()

    recorder.all_closed = all_closed
    for rep in replicas:
        rep.start()
    env.process(_arrive(env, arrivals, front, route))
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
    devices = device_frame(scenario, replicas, duration)
    links = link_frame(replicas, pool, duration)
    summary = summarize(scenario, requests, recorder, devices, links, duration)
    summary.update(pipeline_summary(replicas, duration))
    summary.update(resource_summary(devices, links))
    summary["cost"] = cost_summary(replicas, summary)
    if handoff is not None:
        summary["kv_transfer"] = {
            "transfers": handoff.transfers,
            "bytes": handoff.bytes_moved,
            "mode": scenario.disaggregation.transfer if scenario.disaggregation else "",
        }
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
