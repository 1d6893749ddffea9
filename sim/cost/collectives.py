"""Collectives priced from the links they cross (α–β model per algorithm).

Sizes: `all_reduce_s(S)` reduces an S-byte buffer held by every device;
`reduce_scatter_s(S)` scatters an S-byte buffer (each device keeps S/n);
`all_gather_s(S)` gathers an S-byte result onto every device; `all_to_all_s(S)` sends
S/n of each device's S-byte buffer to every other device — the sizes NCCL benchmarks
report, so calibrated fits plug in unchanged.

Algorithms, each over the routes its hops take through the topology; hops that share a
directed link split its bandwidth, so an algorithm is as fast as its most loaded link:

- ring: reduce-scatter then all-gather, each n−1 steps of S/n bytes paying the hop
  latency: 2(n−1)·(α + S/(n·B)) for an all-reduce.
- tree (NCCL's double binary tree): a binary tree over the nodes, a chain inside each
  node, two complementary trees each carrying half the data, reduce up and broadcast
  down pipelined: 2·(⌊log2 N⌋·α_net + (m−1)·α_node) + 2·S/B on the slowest hop (N nodes,
  m devices per node). Inside one node NCCL's tree is a chain and never beats the ring,
  so the tree only wins across nodes, for small messages.
- one-shot (one NVSwitch node): every device reads the n−1 peer buffers through its
  switch port at once: α + (n−1)·S/B.
- hierarchical (several nodes, the same device count on each): reduce-scatter inside
  each node, all-reduce across nodes on the per-device rails (NICs), all-gather inside
  each node — what NCCL does on DGX clusters; it is the ring candidate there.
- dimension-ordered (a TPU torus, when the group is a sub-box of it: a product of
  contiguous coordinate ranges, as a slice is): reduce-scatter along one axis (a ring
  of that axis's length; where the axis wraps around, the ring runs both ways at once,
  half the data on each direction's links), then along the next axis on the 1/k-sized
  shard, and so on; all-gathers in reverse order. With equal links a reduce-scatter
  takes Σ_i (k_i−1)·α + S·(1 − 1/n)/(d·B) (d = 2 directions on a wrapped axis): the
  bandwidth term of a bidirectional ring over all n chips with only Σ(k_i−1) latency
  steps instead of n−1. Parallel lines of one axis use disjoint links. An all-to-all
  there is routed dimension by dimension too: each axis's links carry an all-to-all of
  the whole buffer along its lines, all axes at once. A torus has no NIC rails, so
  groups there are never hierarchical; one that is not a box runs a flat ring.

`all_reduce_s` takes the fastest candidate, as NCCL's tuner (or XLA on a TPU torus)
would. Where a calibration profile measured a collective on this machine type with
this many devices, its α–β fit replaces the model for that op.

`axis_groups` lays a group out as an X × Y grid (along torus axes where it can) and
returns the collectives of its rows and columns, for 2D tensor-parallel layouts.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sim.cost.topology import Cluster
from sim.cost.torus import AxisPhase, split_box, torus_box
from sim.errors import LlmsimError
from sim.spec.profile import CollectiveFit

Edge = tuple[str, str]


@dataclass(frozen=True)
class CustomAllReduce:
    """A serving engine's all-reduce kernel for messages up to `max_bytes` inside one
    NVLink domain (sim.spec.runtime): its fixed cost per phase."""

    max_bytes: float
    latency_s: float
    bandwidth: float | None = None  # bytes/s one device moves in it (None: the link's)


@dataclass(frozen=True)
class Grid:
    """A group laid out as X × Y: `x_groups` are the Y groups of X devices that share
    a column (they differ along the X axes), `y_groups` the X groups of Y devices that
    share a row. Collectives of the parallel groups run at once on disjoint links."""

    x: int
    y: int
    x_groups: tuple[CollectiveModel, ...]
    y_groups: tuple[CollectiveModel, ...]


class CollectiveModel:
    """Collectives among one group of devices (global indices, in ring order)."""

    def __init__(
        self,
        cluster: Cluster,
        devices: Sequence[int],
        fits: Sequence[CollectiveFit] = (),
        custom: CustomAllReduce | None = None,
    ):
        self.cluster = cluster
        self.devices = tuple(devices)
        self.n = len(self.devices)
        self.fits = tuple(fits)
        self.launch_s = cluster.device.launch_overhead_s
        on_torus = cluster.spec.torus is not None
        fabric = cluster.node_spec.fabric.kind if cluster.node_spec is not None else ""
        # One switch between every pair: a one-shot algorithm (each device reads every
        # peer's buffer at once) beats the ring for small messages.
        span = len({cluster.node_of(d) for d in self.devices})
        self.switched = fabric == "nvswitch" and span == 1
        # A serving engine's own all-reduce kernel for small messages needs every pair of
        # the group one hop apart: one switch, or a full mesh (xGMI).
        direct = fabric in ("nvswitch", "nvlink-mesh") and span == 1
        self.custom = custom if direct and custom is not None and custom.max_bytes > 0 else None
        # Measured α–β for this group: same machine type, device count and node span.
        node = cluster.node_spec.name if cluster.node_spec is not None else ""
        where = node if span == 1 else f"{node}*{span}"
        self.measured = {f.op: f for f in fits if f.fabric == where and f.n_devices == self.n}
        nodes = sorted({cluster.node_of(d) for d in self.devices})
        per_node = Counter(cluster.node_of(d) for d in self.devices)
        # TPU hosts have no NIC rails: torus traffic stays on ICI, so no hierarchy there.
        self.hierarchical = not on_torus and len(nodes) > 1 and len(set(per_node.values())) == 1
        if self.hierarchical:
            self.local = [tuple(d for d in self.devices if cluster.node_of(d) == n) for n in nodes]
            self.rails = [
                tuple(group[i] for group in self.local) for i in range(len(self.local[0]))
            ]
        self.box = torus_box(cluster, self.devices)
        self.tree_ok = not on_torus and span > 1
        self._phases: tuple[AxisPhase, ...] | None = None
        self._ring_info: dict[tuple[int, ...], tuple[float, float, tuple[Edge, ...]]] = {}
        self._a2a: tuple[_Affine, ...] | None = None

    # ring -------------------------------------------------------------------------
    @staticmethod
    @functools.cache
    def _rings(
        cluster: Cluster, rings: tuple[tuple[int, ...], ...]
    ) -> tuple[float, float, tuple[Edge, ...]]:
        """(bandwidth per hop, latency per step, directed links used) of rings that
        run at once: each ring's hops follow their routes and share the links."""
        routes = [
            cluster.route(f"dev{r[i]}", f"dev{r[(i + 1) % len(r)]}")
            for r in rings
            for i in range(len(r))
        ]
        load: Counter[Edge] = Counter(edge for r in routes for edge in r.edges)
        bandwidth = min(
            min(cluster.link(*e).bandwidth_bytes_per_s / load[e] for e in r.edges) for r in routes
        )
        latency = max(r.latency_s for r in routes)
        return bandwidth, latency, tuple(sorted(load))

    @classmethod
    def _ring(
        cls, cluster: Cluster, devices: tuple[int, ...]
    ) -> tuple[float, float, tuple[Edge, ...]]:
        """(bandwidth per hop, latency per step, directed links used) of one ring."""
        return cls._rings(cluster, (devices,))

    def _ring_phase_s(self, devices: tuple[int, ...], size_bytes: float) -> float:
        """One reduce-scatter or all-gather of `size_bytes` over a ring."""
        n = len(devices)
        if n <= 1 or size_bytes <= 0:
            return 0.0
        ring = self._ring_info.get(devices)
        if ring is None:  # kept here too: hashing a long tuple on every call is slow
            ring = self._ring_info[devices] = self._ring(self.cluster, devices)
        bandwidth, latency, _ = ring
        if bandwidth <= 0:
            return float("inf")
        return (n - 1) * (latency + size_bytes / n / bandwidth)

    def _rs_s(self, size_bytes: float) -> float:
        """Ring reduce-scatter, hierarchical across nodes; no launch."""
        if not self.hierarchical:
            return self._ring_phase_s(self.devices, size_bytes)
        local = max(self._ring_phase_s(g, size_bytes) for g in self.local)
        return local + max(
            self._ring_phase_s(r, size_bytes / len(self.local[0])) for r in self.rails
        )

    # torus, dimension by dimension ------------------------------------------------
    @staticmethod
    @functools.cache
    def _axis_phase(cluster: Cluster, lines: tuple[tuple[int, ...], ...]) -> AxisPhase:
        """The rings of one axis: one way round, or both ways where that is faster
        (a wrapped axis: each direction has its own links)."""
        one_bw, one_lat, one_links = CollectiveModel._rings(cluster, lines)
        both = lines + tuple(line[::-1] for line in lines)
        two_bw, two_lat, two_links = CollectiveModel._rings(cluster, both)
        if 2 * two_bw > one_bw:
            return AxisPhase(len(lines[0]), two_bw, two_lat, 2, two_links)
        return AxisPhase(len(lines[0]), one_bw, one_lat, 1, one_links)

    def axis_phases(self) -> tuple[AxisPhase, ...]:
        """The dimension-ordered phases of a torus box, fastest axis first (with equal
        links the order does not change the time: Σ (1−1/k_i)/Π_{j<i} k_j = 1 − 1/n)."""
        if self.box is None:
            return ()
        if self._phases is None:
            phases = [self._axis_phase(self.cluster, self.box.lines(a)) for a in self.box.axes]
            order = sorted(range(len(phases)), key=lambda i: (-phases[i].effective_bytes_per_s, i))
            self._phases = tuple(phases[i] for i in order)
        return self._phases

    def _torus_rs_s(self, size_bytes: float) -> float:
        t, shard = 0.0, size_bytes
        for phase in self.axis_phases():
            t += phase.time_s(shard)
            shard /= phase.size
        return t

    def _torus_a2a_s(self, size_bytes: float) -> float:
        """All-to-all on a torus box, routed dimension by dimension: a flow crosses each
        axis once, so the load on an axis's links is that of an all-to-all of the whole
        buffer along its lines; the axes carry their loads at once, the latencies add."""
        assert self.box is not None
        if self._a2a is None:
            lines = (self._a2a_line(self.cluster, self.box.lines(a)[0]) for a in self.box.axes)
            self._a2a = tuple(lines)
        alpha = sum(line.alpha_s for line in self._a2a)
        return alpha + size_bytes * max(line.s_per_byte for line in self._a2a)

    @staticmethod
    @functools.cache
    def _a2a_line(cluster: Cluster, line: tuple[int, ...]) -> _Affine:
        """α–β of an all-to-all among one line (parallel lines are translates of it)."""
        k = len(line)
        load: Counter[Edge] = Counter()
        latency = 0.0
        for a, b in itertools.permutations(line, 2):
            route = cluster.route(f"dev{a}", f"dev{b}")
            latency = max(latency, route.latency_s)
            for e in route.edges:
                load[e] += 1
        per_byte = max(load[e] / k / cluster.link(*e).bandwidth_bytes_per_s for e in load)
        return _Affine(latency, per_byte)

    # tree -------------------------------------------------------------------------
    @staticmethod
    @functools.cache
    def _tree(cluster: Cluster, devices: tuple[int, ...]) -> tuple[float, float]:
        """(slowest hop bandwidth, one-way latency) of NCCL's double binary tree: a
        chain inside each node, binary trees (heap order and its mirror) over nodes."""
        chains: dict[int, list[int]] = {}
        for d in devices:
            chains.setdefault(cluster.node_of(d), []).append(d)
        routes = []
        chain_s = 0.0
        for chain in chains.values():
            hops = [cluster.route(f"dev{a}", f"dev{b}") for a, b in itertools.pairwise(chain)]
            routes += hops
            chain_s = max(chain_s, sum(r.latency_s for r in hops))
        leaders = [c[0] for c in chains.values()]
        inter = [
            cluster.route(f"dev{order[(i - 1) // 2]}", f"dev{order[i]}")
            for order in (leaders, leaders[::-1])
            for i in range(1, len(leaders))
        ]
        routes += inter
        depth = len(leaders).bit_length() - 1  # ⌊log2 N⌋ levels below the root
        hop_s = max((r.latency_s for r in inter), default=0.0)
        bandwidth = min(r.bandwidth_bytes_per_s for r in routes)
        return bandwidth, depth * hop_s + chain_s

    def _tree_s(self, size_bytes: float) -> float:
        bandwidth, one_way_s = self._tree(self.cluster, self.devices)
        if bandwidth <= 0:
            return float("inf")
        return 2.0 * one_way_s + 2.0 * size_bytes / bandwidth

    def _one_shot_s(self, size_bytes: float) -> float:
        """Every device pulls the n−1 peer buffers through its switch port and reduces."""
        route = self.cluster.route(f"dev{self.devices[0]}", f"dev{self.devices[1]}")
        return route.latency_s + (self.n - 1) * size_bytes / route.bandwidth_bytes_per_s

    # collectives --------------------------------------------------------------------
    def _fit_s(self, op: str, size_bytes: float) -> float | None:
        fit = self.measured.get(op)
        if fit is None:
            return None
        return fit.alpha_s + size_bytes / fit.bandwidth_bytes_per_s

    def all_reduce_algorithms(self, size_bytes: float) -> dict[str, float]:
        """Seconds of each all-reduce algorithm this group can run (launch included):
        `ring` (hierarchical across nodes), `tree`, `one-shot`, `torus`."""
        if self.n <= 1 or size_bytes <= 0:
            return {}
        out = {"ring": self.launch_s + 2.0 * self._rs_s(size_bytes)}
        if self.switched:
            out["one-shot"] = self.launch_s + self._one_shot_s(size_bytes)
        if self.tree_ok:
            out["tree"] = self.launch_s + self._tree_s(size_bytes)
        if self.box is not None:
            out["torus"] = self.launch_s + 2.0 * self._torus_rs_s(size_bytes)
        return out

    def all_reduce_algorithm(self, size_bytes: float) -> str:
        """The algorithm `all_reduce_s` prices (`measured` for a calibrated fit)."""
        if "all_reduce" in self.measured:
            return "measured"
        algos = self.all_reduce_algorithms(size_bytes)
        return min(algos, key=lambda k: algos[k]) if algos else ""

    def _custom_s(self, size_bytes: float) -> float:
        """The engine's one-shot (each device reads every peer's buffer) or two-shot
        (reduce-scatter then all-gather through peer memory) kernel: the faster."""
        assert self.custom is not None
        route = self.cluster.route(f"dev{self.devices[0]}", f"dev{self.devices[1]}")
        bw, lat = route.bandwidth_bytes_per_s, self.custom.latency_s
        if self.custom.bandwidth is not None:
            bw = min(bw, self.custom.bandwidth)
        one = lat + (self.n - 1) * size_bytes / bw
        two = 2 * lat + 2 * size_bytes * (self.n - 1) / self.n / bw
        return min(one, two)

    def all_reduce_s(self, size_bytes: float) -> float:
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        if self.custom is not None and size_bytes <= self.custom.max_bytes:
            return self._custom_s(size_bytes)
        fit = self._fit_s("all_reduce", size_bytes)
        if fit is not None:
            return fit
        return min(self.all_reduce_algorithms(size_bytes).values())

    def reduce_scatter_s(self, size_bytes: float) -> float:
        """Reduce-scatter of a `size_bytes` buffer; each device keeps 1/n of it."""
        return self._scatter_s("reduce_scatter", size_bytes)

    def all_gather_s(self, size_bytes: float) -> float:
        """All-gather whose gathered result is `size_bytes` on every device (a
        reduce-scatter run backwards: the same steps and bytes)."""
        return self._scatter_s("all_gather", size_bytes)

    def _scatter_s(self, kind: str, size_bytes: float) -> float:
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        fit = self._fit_s(kind, size_bytes)
        if fit is not None:
            return fit
        t = self._rs_s(size_bytes)
        if self.box is not None:
            t = min(t, self._torus_rs_s(size_bytes))
        return self.launch_s + t

    def all_to_all_s(self, size_bytes: float) -> float:
        """Each device sends size/n of its `size_bytes` buffer to every other device:
        bounded by its port (dimension by dimension on a torus box)."""
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        fit = self._fit_s("all_to_all", size_bytes)
        if fit is not None:
            return fit
        if self.box is not None:
            return self.launch_s + self._torus_a2a_s(size_bytes)
        bandwidth, latency, _ = self._ring(self.cluster, self.devices)
        return self.launch_s + latency + size_bytes * (self.n - 1) / self.n / bandwidth

    # all-to-all over every pair's route ----------------------------------------------
    @staticmethod
    @functools.cache
    def _pairwise(cluster: Cluster, devices: tuple[int, ...]) -> _PairwiseLoad:
        """Every ordered pair's route at once: the flows each directed link carries,
        the slowest per-byte link and the longest route's latency."""
        load: Counter[Edge] = Counter()
        latency = 0.0
        for a, b in itertools.permutations(devices, 2):
            route = cluster.route(f"dev{a}", f"dev{b}")
            latency = max(latency, route.latency_s)
            load.update(route.edges)
        per_flow = max(
            (load[e] / cluster.link(*e).bandwidth_bytes_per_s for e in load), default=0.0
        )
        return _PairwiseLoad(latency, per_flow, tuple(sorted(load)))

    def all_to_all_routed_s(self, size_bytes: float) -> float:
        """All-to-all as an expert-parallel dispatch runs it: every device sends
        size/n to every other device over its own route, all flows at once; a link
        carrying f flows moves f·size/n bytes, so the most loaded link decides:
        launch + max route latency + max_e(f_e / B_e) · size/n. On one NVSwitch that is
        (n−1)/n · size / B (each device's port carries its n−1 flows); across nodes the
        NIC rails carry the flows between them. A calibrated all-to-all fit replaces it."""
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        fit = self._fit_s("all_to_all", size_bytes)
        if fit is not None:
            return fit
        pair = self._pairwise(self.cluster, self.devices)
        if pair.s_per_flow_byte <= 0:
            return self.launch_s + pair.latency_s
        return self.launch_s + pair.latency_s + size_bytes / self.n * pair.s_per_flow_byte

    def all_to_all_links(self) -> tuple[Edge, ...]:
        """Directed links `all_to_all_routed_s` crosses: every pair's route."""
        if self.n <= 1:
            return ()
        return self._pairwise(self.cluster, self.devices).links

    def links(self) -> tuple[Edge, ...]:
        """Directed links this group's collectives occupy: the axis rings on a torus
        box, the ring otherwise."""
        if self.n <= 1:
            return ()
        if self.box is not None:
            return tuple(sorted({e for p in self.axis_phases() for e in p.links}))
        return self._ring(self.cluster, self.devices)[2]

    # sub-groups -------------------------------------------------------------------
    def grid_sizes(self) -> tuple[int, ...]:
        """The X sizes (2 ≤ X ≤ n/2) an X × Y grid of this group can take: products of
        torus axes on a torus box, else every divisor of n."""
        if self.box is not None and len(self.box.axes) > 1:
            sizes = {
                math.prod(sub)
                for r in range(1, len(self.box.extents))
                for sub in itertools.combinations(self.box.extents, r)
            }
            return tuple(sorted(sizes))
        return tuple(x for x in range(2, self.n // 2 + 1) if self.n % x == 0)

    def default_grid_x(self) -> int:
        """X of the default grid: on a torus, the product of axes nearest √n; elsewhere
        the largest power of two ≤ √n that divides n (so rows stay inside a node)."""
        if self.box is not None and len(self.box.axes) > 1:
            root = math.sqrt(self.n)
            return min(self.grid_sizes(), key=lambda x: (abs(math.log(x / root)), x))
        x = 1
        while (2 * x) ** 2 <= self.n and self.n % (2 * x) == 0:
            x *= 2
        return x

    def axis_groups(self, x: int | None = None) -> Grid:
        """This group as an X × Y grid (`x` devices a row; None: `default_grid_x`).

        On a torus box with X a product of its axes, rows run along those axes and
        columns along the others, so both are boxes priced dimension by dimension.
        Otherwise rows are consecutive runs of X devices in group order (inside a node
        when X divides the devices per node) and columns take every X-th device."""
        x = self.default_grid_x() if x is None else x
        if x < 1 or self.n % x:
            raise LlmsimError(
                f"a grid of {x} devices a row does not divide the group of {self.n}",
                key="parallel.tp_layout",
            )
        y = self.n // x
        box = self.box
        if box is not None:
            for r in range(1, len(box.axes)):
                for sub in itertools.combinations(range(len(box.axes)), r):
                    if math.prod(box.extents[i] for i in sub) != x:
                        continue
                    x_axes = [box.axes[i] for i in sub]
                    y_axes = [a for a in box.axes if a not in x_axes]
                    rows = split_box(box, x_axes, y_axes)
                    cols = split_box(box, y_axes, x_axes)
                    return self._grid(x, y, rows, cols)
        rows = [self.devices[i * x : (i + 1) * x] for i in range(y)]
        cols = [self.devices[j::x] for j in range(x)]
        return self._grid(x, y, rows, cols)

    def _grid(
        self, x: int, y: int, rows: Sequence[Sequence[int]], cols: Sequence[Sequence[int]]
    ) -> Grid:
        return Grid(
            x,
            y,
            tuple(CollectiveModel(self.cluster, r, self.fits, self.custom) for r in rows),
            tuple(CollectiveModel(self.cluster, c, self.fits, self.custom) for c in cols),
        )


@dataclass(frozen=True)
class _PairwiseLoad:
    latency_s: float
    s_per_flow_byte: float  # max over links of (flows on it) / bandwidth
    links: tuple[Edge, ...]


@dataclass(frozen=True)
class _Affine:
    alpha_s: float
    s_per_byte: float

    def __call__(self, size_bytes: float) -> float:
        return self.alpha_s + size_bytes * self.s_per_byte
