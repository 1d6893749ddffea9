"""The cluster as a graph: devices, switches and hosts joined by directed links.

Built with networkx from a `ClusterSpec`. Devices get global indices (node-major:
device j of node n is n·devices_per_node + j). Each undirected hop becomes two directed
edges, each its own link with a bandwidth per direction, so traffic one way does not
slow traffic the other way. A transfer between two devices takes the route with the
least latency; its speed is the slowest link on the route.

Node and vertex names: `dev{i}`, `host{n}`, `nvsw{n}` (the NVSwitch of node n),
`net` (the non-blocking network between nodes), `disk{n}`.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TypeVar

import networkx as nx

from sim.errors import LlmsimError
from sim.spec.hardware import ClusterSpec, DeviceSpec, HostSpec, LinkSpec, NodeSpec


@dataclass(frozen=True)
class Route:
    edges: tuple[tuple[str, str], ...]
    bandwidth_bytes_per_s: float
    latency_s: float

    def transfer_s(self, size_bytes: float) -> float:
        if size_bytes <= 0 or not self.edges:
            return 0.0
        if self.bandwidth_bytes_per_s <= 0:
            return float("inf")
        return self.latency_s + size_bytes / self.bandwidth_bytes_per_s


class Cluster:
    """Resolved hardware: device specs by global index and the link graph."""

    def __init__(
        self,
        spec: ClusterSpec,
        device: DeviceSpec,
        devices_per_node: int,
        host: HostSpec,
        graph: nx.DiGraph,
        node_spec: NodeSpec | None = None,
    ):
        self.spec = spec
        self.device = device
        self.devices_per_node = devices_per_node
        self.host = host
        self.graph = graph
        self.node_spec = node_spec

    @property
    def n_devices(self) -> int:
        return sum(1 for v in self.graph.nodes if str(v).startswith("dev"))

    def node_of(self, dev: int) -> int:
        return dev // self.devices_per_node

    def link(self, u: str, v: str) -> LinkSpec:
        spec: LinkSpec = self.graph.edges[u, v]["link"]
        return spec

    @functools.cache  # noqa: B019 - a Cluster lives for one run; routes are reused
    def route(self, src: str, dst: str) -> Route:
        if src == dst:
            return Route((), float("inf"), 0.0)
        try:
            path = nx.shortest_path(self.graph, src, dst, weight="cost")
        except nx.NetworkXNoPath:
            raise LlmsimError(f"no route from {src} to {dst} in cluster {self.spec.name}") from None
        edges = tuple(itertools.pairwise(path))
        links = [self.link(u, v) for u, v in edges]
        return Route(
            edges,
            min(link.bandwidth_bytes_per_s for link in links),
            sum(link.latency_s for link in links),
        )


T = TypeVar("T")


def _resolved(ref: object, kind: type[T], spec: ClusterSpec) -> T:
    """A node or device of a cluster spec, which must be inlined (the catalog and the
    scenario loader resolve references; building a graph reads no files)."""
    if not isinstance(ref, kind):
        raise LlmsimError(
            f"cluster {spec.name}: {kind.__name__} {ref!r} is a reference; resolve the spec "
            "with sim.spec.catalog.resolve_cluster first"
        )
    return ref


def _add(g: nx.DiGraph, u: str, v: str, link: LinkSpec) -> None:
    # Cost for routing: latency, plus a tiny per-hop term so equal-latency routes
    # prefer fewer hops, plus 1/bandwidth so faster paths win ties.
    cost = (
        link.latency_s
        + 1e-9
        + (1.0 / link.bandwidth_bytes_per_s if link.bandwidth_bytes_per_s else 1.0)
    )
    g.add_edge(u, v, link=link, cost=cost)
    g.add_edge(v, u, link=link, cost=cost)


def build_cluster(spec: ClusterSpec) -> Cluster:
    g: nx.DiGraph = nx.DiGraph()
    if spec.torus is not None:
        return _build_torus(spec, g)
    node = _resolved(spec.node, NodeSpec, spec)
    device = _resolved(node.device, DeviceSpec, spec)
    per = node.devices_per_node
    fabric = node.fabric
    fab_link = LinkSpec(
        bandwidth_bytes_per_s=fabric.bandwidth_bytes_per_s,
        latency_s=fabric.latency_s,
        kind=fabric.kind,
    )
    for n in range(spec.nodes):
        host = f"host{n}"
        g.add_node(host, kind="host")
        if node.host.disk is not None:
            disk = node.host.disk
            g.add_edge(
                f"disk{n}",
                host,
                link=LinkSpec(
                    bandwidth_bytes_per_s=disk.read_bandwidth_bytes_per_s,
                    latency_s=disk.latency_s,
                    kind="nvme-read",
                ),
                cost=disk.latency_s,
            )
            g.add_edge(
                host,
                f"disk{n}",
                link=LinkSpec(
                    bandwidth_bytes_per_s=disk.write_bandwidth_bytes_per_s,
                    latency_s=disk.latency_s,
                    kind="nvme-write",
                ),
                cost=disk.latency_s,
            )
        devs = [f"dev{n * per + j}" for j in range(per)]
        for d in devs:
            g.add_node(d, kind="device")
            _add(g, d, host, node.pcie)
        if fabric.kind == "nvswitch":
            sw = f"nvsw{n}"
            for d in devs:
                _add(g, d, sw, fab_link)
        elif fabric.kind == "nvlink-pairs":
            for j in range(0, per - 1, 2):
                _add(g, devs[j], devs[j + 1], fab_link)
        elif fabric.kind == "nvlink-mesh":
            for a, b in itertools.combinations(devs, 2):
                _add(g, a, b, fab_link)
        if node.nic is not None and spec.nodes > 1:
            # Half the switch-hop latency on each side of the network vertex.
            half = spec.network.latency_s / 2
            nic = node.nic.model_copy(update={"latency_s": node.nic.latency_s + half})
            for d in devs:
                _add(g, d, "net", nic)
        elif spec.nodes > 1:
            raise LlmsimError(
                f"node {node.name} has no `nic`, so {spec.nodes} of them cannot be joined",
                key="cluster",
            )
    return Cluster(spec, device, per, node.host, g, node)


def _build_torus(spec: ClusterSpec, g: nx.DiGraph) -> Cluster:
    torus = spec.torus
    assert torus is not None
    device = _resolved(torus.device, DeviceSpec, spec)
    dims = torus.dims
    coords = list(itertools.product(*(range(d) for d in dims)))
    index = {c: i for i, c in enumerate(coords)}
    for c, i in index.items():
        g.add_node(f"dev{i}", kind="device", coord=c)
        host = i // torus.chips_per_host
        g.add_node(f"host{host}", kind="host")
        _add(g, f"dev{i}", f"host{host}", torus.pcie)
    for c, i in index.items():
        for axis, size in enumerate(dims):
            if size == 1:
                continue
            nxt = list(c)
            nxt[axis] = c[axis] + 1
            if nxt[axis] == size:
                if not torus.wraparound or size == 2:
                    continue
                nxt[axis] = 0
            j = index[tuple(nxt)]
            _add(g, f"dev{i}", f"dev{j}", torus.link)
    return Cluster(spec, device, torus.chips_per_host, torus.host, g)


def n_devices(spec: ClusterSpec) -> int:
    """Accelerators in a cluster spec, without building its graph."""
    if spec.torus is not None:
        count = 1
        for d in spec.torus.dims:
            count *= d
        return count
    return _resolved(spec.node, NodeSpec, spec).devices_per_node * spec.nodes


SPINE = LinkSpec(bandwidth_bytes_per_s=1e15, latency_s=0.5e-6, kind="spine")


def join_clusters(parts: list[tuple[Cluster, str]]) -> Cluster:
    """One graph over several clusters (vertex names prefixed per cluster), joined
    through each device's NIC to its cluster's network vertex and a non-blocking spine
    between those: the routes a disaggregated deployment's KV transfers take."""
    g: nx.DiGraph = nx.DiGraph()
    for cluster, prefix in parts:
        g.update(nx.relabel_nodes(cluster.graph, lambda v, p=prefix: p + str(v)))
        node = cluster.node_spec
        if node is None or node.nic is None:
            raise LlmsimError(
                f"cluster {cluster.spec.name} has no NICs to reach the other pool",
                key="disaggregation",
            )
        for i in range(cluster.n_devices):
            if not g.has_edge(f"{prefix}dev{i}", f"{prefix}net"):
                _add(g, f"{prefix}dev{i}", f"{prefix}net", node.nic)
    nets = [f"{prefix}net" for _, prefix in parts]
    for a, b in itertools.combinations(nets, 2):
        _add(g, a, b, SPINE)
    first = parts[0][0]
    return Cluster(first.spec, first.device, first.devices_per_node, first.host, g, first.node_spec)
