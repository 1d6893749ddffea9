"""A scenario as a deployment: replicas, their stages on devices, the routes their
transfers take, each device's memory budget, and the cost of each stage.

Placement: replica r uses devices r·tp·pp … (r+1)·tp·pp − 1 of its cluster, stage s of
it the tp consecutive devices from r·tp·pp + s·tp. A disaggregated deployment places
its prefill pool first and its decode pool after it on the scenario's cluster, or each
pool on a cluster of its own, joined to the other through their NICs.

Links are named in one namespace for the whole deployment (`Network`): a pool on a
cluster of its own prefixes its vertex names, so two transfers that cross the same
physical link name the same edge, and the engine holds one resource for it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sim.arith.memory import kv_bytes_per_token
from sim.arith.ops import layer_plan
from sim.arith.precision import Precision
from sim.cost.collectives import CustomAllReduce
from sim.cost.hf_eager import runtime_kernel
from sim.cost.layouts import Layout, build_layout
from sim.cost.offload import Machine, StepPricer
from sim.cost.stage import StageCost
from sim.cost.topology import Cluster, Route, build_cluster, join_clusters
from sim.errors import LlmsimError
from sim.plan.experts import expert_group
from sim.plan.kernels import make_kernel
from sim.plan.layers import plan_attention
from sim.plan.memory import MemoryPlan, plan_memory
from sim.plan.offload import offload_machine
from sim.plan.speculative import Where, speculation
from sim.spec.hardware import DeviceSpec, LinkSpec
from sim.spec.offload import OffloadSpec
from sim.spec.runtime import RuntimeSpec
from sim.spec.scenario import Scenario
from sim.spec.scheduler import KVTiersSpec

Edge = tuple[str, str]
POOL_PREFIX = {"prefill": "p:", "decode": "d:"}
# The link each offload stream crosses (directed edges of the node graph).
STREAM_EDGES = {
    "ctog": ("host0", "dev0"),
    "gtoc": ("dev0", "host0"),
    "dtoc": ("disk0", "host0"),
    "ctod": ("host0", "disk0"),
}


@dataclass(frozen=True)
class Path:
    """A route whose directed links a transfer holds, in the order it takes them
    (sorted, so two transfers never wait for each other's links in a cycle)."""

    route: Route
    edges: tuple[Edge, ...]

    def seconds(self, size_bytes: float) -> float:
        return self.route.transfer_s(size_bytes)


class Network:
    """Every link a deployment's transfers and collectives use, by its name."""

    def __init__(self) -> None:
        self.specs: dict[Edge, LinkSpec] = {}

    def name(self, cluster: Cluster, edge: Edge, prefix: str = "") -> Edge:
        named = (prefix + edge[0], prefix + edge[1])
        self.specs.setdefault(named, cluster.link(*edge))
        return named

    def path(self, cluster: Cluster, src: str, dst: str, prefix: str = "") -> Path:
        route = cluster.route(src, dst)
        return Path(route, tuple(sorted(self.name(cluster, e, prefix) for e in route.edges)))


@dataclass(frozen=True)
class StagePlan:
    """A TP group holding a block of layers."""

    index: int
    devices: tuple[int, ...]
    cost: StageCost  # shared with other replicas' stages of the same cost
    links: tuple[Edge, ...]  # what the group's TP collectives occupy
    # Those of `links` some other transfer or collective of the deployment may also
    # cross: the stage holds them while its collectives run (the others cannot contend).
    shared: tuple[Edge, ...] = ()


@dataclass(frozen=True)
class OffloadPlan:
    spec: OffloadSpec
    machine: Machine
    pricer: StepPricer
    streams: dict[str, Edge]  # the link each stream crosses (those the node has)


@dataclass(frozen=True)
class ReplicaPlan:
    index: int
    role: str  # "both" (colocated), "prefill" or "decode"
    device: DeviceSpec
    stages: tuple[StagePlan, ...]
    sends: tuple[Path, ...]  # activations from stage s to s + 1
    host: Path  # to host memory (swaps)
    memory: MemoryPlan
    offload: OffloadPlan | None = None
    # Tiered KV's disk tier (scheduler.kv_tiers.disk): host to disk and back
    disk_write: Path | None = None
    disk_read: Path | None = None


class KVPath:
    """The routes from one prefill replica's devices to one decode replica's devices:
    the KV cache leaves every prefill device (each holds its share of the layers and
    heads) for a decode device, pair by pair, all at once; pairs whose routes share a
    link split its bandwidth, and the slowest pair decides."""

    def __init__(self, cluster: Cluster, src: Sequence[str], dst: Sequence[str], net: Network):
        routes = [cluster.route(s, dst[i % len(dst)]) for i, s in enumerate(src)]
        load: Counter = Counter(e for r in routes for e in r.edges)
        self.shards = len(routes)
        self.edges = tuple(sorted(load))
        for e in self.edges:  # the joined graph already names every link uniquely
            net.name(cluster, e)
        self._bandwidth = []
        for r in routes:
            if not r.edges:
                self._bandwidth.append((float("inf"), 0.0))
                continue
            bw = min(cluster.link(*e).bandwidth_bytes_per_s / load[e] for e in r.edges)
            if bw <= 0:
                raise LlmsimError(
                    f"the route {r.edges[0][0]} -> {r.edges[-1][1]} between the prefill and "
                    "decode pools has a link of zero bandwidth: the KV cache cannot move",
                    key="disaggregation",
                )
            self._bandwidth.append((bw, r.latency_s))

    def seconds(self, size_bytes: float) -> float:
        """Every shard in parallel: the slowest one decides."""
        if size_bytes <= 0:
            return 0.0
        shard = size_bytes / self.shards
        return max(lat + (shard / bw if bw != float("inf") else 0.0) for bw, lat in self._bandwidth)


@dataclass(frozen=True)
class Disaggregation:
    """Where a prefilled request's KV cache goes and how."""

    decode: tuple[int, ...]  # positions in Deployment.replicas
    paths: dict[tuple[int, int], KVPath]  # (prefill index, decode index) -> routes
    kv_bytes_per_token: float
    layerwise_fraction: float | None  # the share left to send after the prefill
    router: str
    mode: str


@dataclass(frozen=True)
class Deployment:
    scenario: Scenario
    precision: Precision
    replicas: tuple[ReplicaPlan, ...]
    front: tuple[int, ...]  # positions of the replicas that take arrivals
    links: dict[Edge, LinkSpec]
    disaggregation: Disaggregation | None = None


def deploy(s: Scenario) -> Deployment:
    """Plan every replica of `s` (both pools when it is disaggregated)."""
    precision = Precision.of(s.precision, s.runtime.io_dtype)
    cluster = build_cluster(s.cluster)
    net = Network()
    if s.disaggregation is None:
        replicas = plan_replicas(s, cluster, net)
        front = tuple(range(len(replicas)))
        return Deployment(s, precision, _mark_shared(s, replicas, None), front, net.specs)
    prefill, decode, dis = _disaggregated(s, cluster, net)
    front = tuple(range(len(prefill)))
    both = _mark_shared(s, [*prefill, *decode], dis)
    return Deployment(s, precision, both, front, net.specs, dis)


def _mark_shared(
    s: Scenario, replicas: Sequence[ReplicaPlan], dis: Disaggregation | None
) -> tuple[ReplicaPlan, ...]:
    """Each stage's collective links that another user of the deployment also crosses
    (a pipeline send, a swap, a KV move, an offload stream, another group's
    collectives): only those can make traffic queue."""
    swaps = getattr(s.scheduler.policy_params(), "preemption", "recompute") == "swap"
    tiered = s.scheduler.policy_params().kv_tiers is not None
    users: Counter[Edge] = Counter()
    for rep in replicas:
        for stage in rep.stages:
            users.update(set(stage.links))
        disk = (rep.disk_write, rep.disk_read) if rep.disk_read is not None else ()
        for path in (*rep.sends, *((rep.host,) if swaps or tiered else ()), *disk):
            users.update(set(path.edges))
        if rep.offload is not None:
            users.update(set(rep.offload.streams.values()))
    if dis is not None:
        for kv in dis.paths.values():
            users.update(set(kv.edges))
    out = []
    for rep in replicas:
        stages = tuple(
            replace(st, shared=tuple(e for e in st.links if users[e] > 1)) for st in rep.stages
        )
        out.append(replace(rep, stages=stages))
    return tuple(out)


def _stage_cost_key(layout: Layout | None) -> tuple[float, ...]:
    """Stages whose communication costs the same share one StageCost (and its memo)."""
    if layout is None:
        return ()
    return (layout.layer_comm_s(1), layout.layer_comm_s(1024))


def custom_latency_s(rt: RuntimeSpec, device: DeviceSpec) -> float:
    """A custom all-reduce's fixed cost as the runtime runs it. `custom_latency` is read
    from microbenchmarks timed without CUDA graphs, one launch included; a runtime that
    replays its steps as graphs launches nothing per kernel, so the device's launch
    overhead comes off (prefill steps a graph does not cover are long enough that the
    launch is lost in them)."""
    if not rt.graphs.enabled:
        return rt.custom_latency_s
    return max(rt.custom_latency_s - device.launch_overhead_s, 0.0)


def _kv_tiers(s: Scenario, cluster: Cluster) -> KVTiersSpec | None:
    """Tiered KV's capacities, bounded by the node's host DRAM and disk."""
    tiers: KVTiersSpec | None = s.scheduler.policy_params().kv_tiers
    if tiers is None:
        return None
    host = cluster.node_spec.host if cluster.node_spec is not None else None
    if host is None or tiers.host_bytes > host.dram_bytes:
        have = f"{host.dram_bytes:.4g} B" if host is not None else "none"
        raise s.error(
            f"host tier {tiers.host_bytes:.4g} B exceeds the node's host DRAM ({have})",
            "scheduler.kv_tiers.host",
        )
    if tiers.disk_bytes > 0:
        if host.disk is None:
            raise s.error(
                f"a disk tier needs a node with host.disk; {cluster.spec.name} has none",
                "scheduler.kv_tiers.disk",
            )
        if tiers.disk_bytes > host.disk.capacity_bytes:
            raise s.error(
                f"disk tier {tiers.disk_bytes:.4g} B exceeds the node's disk "
                f"({host.disk.capacity_bytes:.4g} B)",
                "scheduler.kv_tiers.disk",
            )
    return tiers


def plan_replicas(
    s: Scenario,
    cluster: Cluster,
    net: Network,
    *,
    first_device: int = 0,
    first_index: int = 0,
    role: str = "both",
    prefix: str = "",
) -> list[ReplicaPlan]:
    """`s.parallel.replicas` replicas on `cluster` from device `first_device` on."""
    precision = Precision.of(s.precision, s.runtime.io_dtype)
    model, par = s.model, s.parallel
    plan = layer_plan(model, par.tp, precision, plan_attention(s))
    try:
        kernel, profile = make_kernel(cluster.device, precision, s.engine.cost)
    except LlmsimError as exc:
        raise s.error(exc.message, exc.key or "engine.cost") from None
    kernel = runtime_kernel(kernel, model, s.runtime)  # hf-eager: ops as transformers runs them
    memory = plan_memory(s, cluster, precision, kernel)
    fits = profile.fit.collectives if profile is not None else ()
    rt = s.runtime
    custom = (
        CustomAllReduce(
            rt.custom_max_bytes, custom_latency_s(rt, cluster.device), rt.custom_bandwidth
        )
        if rt.all_reduce == "custom"
        else None
    )
    shared_costs: dict[tuple[object, ...], StageCost] = {}
    tiers = _kv_tiers(s, cluster)
    replicas = []
    for r in range(first_index, first_index + par.replicas):
        base = first_device + (r - first_index) * par.devices_per_replica
        stages = []
        for i, layers in enumerate(memory.stages):
            width = par.stage_devices
            devices = tuple(range(base + i * width, base + (i + 1) * width))
            experts = expert_group(s, plan, precision, cluster, devices, fits, custom)
            layout = (
                build_layout(
                    par.tp_layout,
                    model,
                    par.tp,
                    precision,
                    cluster,
                    devices,
                    fits,
                    par.attention,
                    custom,
                )
                if par.tp > 1 and experts is None
                else None
            )
            key = (i, layers, *_stage_cost_key(layout), *(experts.key() if experts else ()))
            cost = shared_costs.get(key)
            if cost is None:
                first, last = i == 0, i == len(memory.stages) - 1
                cost = StageCost(
                    plan,
                    layers,
                    kernel,
                    layout,
                    first=first,
                    last=last,
                    runtime=s.runtime,
                    experts=experts,
                    speculation=speculation(s, Where(kernel, cluster, devices, fits, custom)),
                )
                shared_costs[key] = cost
            links = layout.links() if layout is not None else ()
            if experts is not None:
                links = experts.links()
            named = tuple(net.name(cluster, e, prefix) for e in links)
            stages.append(StagePlan(i, devices, cost, named))
        sends = tuple(
            net.path(
                cluster, f"dev{stages[i].devices[0]}", f"dev{stages[i + 1].devices[0]}", prefix
            )
            for i in range(len(stages) - 1)
        )
        host = net.path(cluster, f"dev{base}", f"host{cluster.node_of(base)}", prefix)
        offload = None
        if s.offload is not None:
            machine = offload_machine(cluster)
            streams = {
                name: net.name(cluster, edge, prefix)
                for name, edge in STREAM_EDGES.items()
                if cluster.graph.has_edge(*edge)
            }
            pricer = StepPricer(model, precision, machine, kernel, s.runtime)
            offload = OffloadPlan(s.offload, machine, pricer, streams)
        disk_write = disk_read = None
        if tiers is not None and tiers.disk_bytes > 0:
            node = f"{cluster.node_of(base)}"
            disk_write = net.path(cluster, f"host{node}", f"disk{node}", prefix)
            disk_read = net.path(cluster, f"disk{node}", f"host{node}", prefix)
        replicas.append(
            ReplicaPlan(
                r,
                role,
                cluster.device,
                tuple(stages),
                sends,
                host,
                memory,
                offload,
                disk_write,
                disk_read,
            )
        )
    return replicas


def _disaggregated(
    s: Scenario, cluster: Cluster, net: Network
) -> tuple[list[ReplicaPlan], list[ReplicaPlan], Disaggregation]:
    """The prefill and decode pools, and the KV routes between them."""
    dis = s.disaggregation
    assert dis is not None
    built: dict[str, tuple[list[ReplicaPlan], Cluster, str]] = {}
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
            reps = plan_replicas(
                pool_scenario,
                on,
                net,
                first_device=first,
                first_index=0 if role == "prefill" else dis.prefill.replicas,
                role=role,
                prefix=prefix,
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
                    net,
                )
            except LlmsimError as exc:
                raise s.error(exc.message, exc.key or "disaggregation") from None
    precision = Precision.of(s.precision, s.runtime.io_dtype)
    layerwise = 1.0 / s.model.n_layers if dis.transfer == "layerwise" else None
    plan = Disaggregation(
        tuple(range(len(prefill), len(prefill) + len(decode))),
        paths,
        kv_bytes_per_token(s.model, precision),
        layerwise,
        dis.decode_router,
        dis.transfer,
    )
    return prefill, decode, plan
