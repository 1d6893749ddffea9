"""Collectives priced from the links they cross (α–β model per algorithm).

A ring over n devices moves 2(n−1)/n of the payload through every device's port for an
all-reduce (reduce-scatter then all-gather), in 2(n−1) steps each paying the hop
latency. Each ring hop follows its route through the topology; hops that share a
directed link (two hops through one PCIe host bridge, say) split its bandwidth, so a
ring is as fast as its most loaded link allows. Where a calibration profile measured
this collective on this machine type with this many devices, its α–β fit is used
instead. A group spanning several nodes runs
hierarchically: reduce-scatter inside each node, all-reduce across nodes on the
per-device rails (NICs), all-gather inside each node — what NCCL does on DGX clusters.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

from sim.calibrate.profile import CollectiveFit
from sim.topology import Cluster


class CollectiveModel:
    """Collectives among one group of devices (global indices, in ring order)."""

    def __init__(
        self, cluster: Cluster, devices: Sequence[int], fits: Sequence[CollectiveFit] = ()
    ):
        self.cluster = cluster
        self.devices = tuple(devices)
        self.n = len(self.devices)
        self.launch_s = cluster.device.launch_overhead_s
        fabric = cluster.node_spec.fabric.kind if cluster.node_spec is not None else ""
        # One switch between every pair: a one-shot algorithm (each device reads every
        # peer's buffer at once) beats the ring for small messages.
        span = len({cluster.node_of(d) for d in devices})
        self.switched = fabric == "nvswitch" and span == 1
        # Measured α–β for this group: same machine type, device count and node span.
        node = cluster.node_spec.name if cluster.node_spec is not None else ""
        where = node if span == 1 else f"{node}*{span}"
        self.measured = {f.op: f for f in fits if f.fabric == where and f.n_devices == self.n}
        nodes = sorted({cluster.node_of(d) for d in self.devices})
        per_node = Counter(cluster.node_of(d) for d in self.devices)
        self.hierarchical = len(nodes) > 1 and len(set(per_node.values())) == 1
        if self.hierarchical:
            self.local = [tuple(d for d in self.devices if cluster.node_of(d) == n) for n in nodes]
            self.rails = [
                tuple(group[i] for group in self.local) for i in range(len(self.local[0]))
            ]

    # ring -------------------------------------------------------------------------
    @staticmethod
    @functools.cache
    def _ring(cluster: Cluster, devices: tuple[int, ...]) -> tuple[float, float, tuple]:
        """(bandwidth per hop, latency per step, directed links used) of a ring."""
        n = len(devices)
        routes = [cluster.route(f"dev{devices[i]}", f"dev{devices[(i + 1) % n]}") for i in range(n)]
        load: Counter = Counter(edge for r in routes for edge in r.edges)
        bandwidth = min(
            min(cluster.link(*e).bandwidth_bytes_per_s / load[e] for e in r.edges) for r in routes
        )
        latency = max(r.latency_s for r in routes)
        return bandwidth, latency, tuple(sorted(load))

    def _ring_phase_s(self, devices: tuple[int, ...], size_bytes: float) -> float:
        """One reduce-scatter or all-gather of `size_bytes` over a ring."""
        n = len(devices)
        if n <= 1 or size_bytes <= 0:
            return 0.0
        bandwidth, latency, _ = self._ring(self.cluster, devices)
        if bandwidth <= 0:
            return float("inf")
        return (n - 1) * (latency + size_bytes / n / bandwidth)

    # collectives --------------------------------------------------------------------
    def reduce_scatter_s(self, size_bytes: float) -> float:
        if not self.hierarchical:
            return self._ring_phase_s(self.devices, size_bytes)
        local = max(self._ring_phase_s(g, size_bytes) for g in self.local)
        return local + max(
            self._ring_phase_s(r, size_bytes / len(self.local[0])) for r in self.rails
        )

    def all_gather_s(self, size_bytes: float) -> float:
        """All-gather whose gathered result is `size_bytes` on every device."""
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        return self.launch_s + self.reduce_scatter_s(size_bytes)

    def all_reduce_s(self, size_bytes: float) -> float:
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        fit = self.measured.get("all_reduce")
        if fit is not None:
            return fit.alpha_s + size_bytes / fit.bandwidth_bytes_per_s
        ring = 2.0 * self.reduce_scatter_s(size_bytes)
        if self.switched:
            return self.launch_s + min(ring, self._one_shot_s(size_bytes))
        return self.launch_s + ring

    def _one_shot_s(self, size_bytes: float) -> float:
        """Every device pulls the n−1 peer buffers through its switch port and reduces."""
        route = self.cluster.route(f"dev{self.devices[0]}", f"dev{self.devices[1]}")
        return route.latency_s + (self.n - 1) * size_bytes / route.bandwidth_bytes_per_s

    def all_to_all_s(self, size_bytes: float) -> float:
        """Each device sends size/n to every other device: bounded by its port."""
        if self.n <= 1 or size_bytes <= 0:
            return 0.0
        bandwidth, latency, _ = self._ring(self.cluster, self.devices)
        return self.launch_s + latency + size_bytes * (self.n - 1) / self.n / bandwidth

    def links(self) -> tuple:
        """Directed links a ring over this group occupies."""
        if self.n <= 1:
            return ()
        return self._ring(self.cluster, self.devices)[2]
