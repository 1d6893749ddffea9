"""A TP group on a TPU torus: the box of coordinates it fills, the parallel lines along
each axis, and one axis's phase of a dimension-ordered collective (a ring of the axis's
length, running both ways where the axis wraps around)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sim.cost.topology import Cluster

Edge = tuple[str, str]
Coord = tuple[int, ...]


@dataclass(frozen=True)
class AxisPhase:
    """One axis of a dimension-ordered collective: `lines` parallel rings of `size`
    devices, each direction's ring at `bandwidth_bytes_per_s` (`directions` = 2 where
    the axis wraps around and both ways pay off)."""

    size: int
    bandwidth_bytes_per_s: float
    latency_s: float
    directions: int
    links: tuple[Edge, ...]

    @property
    def effective_bytes_per_s(self) -> float:
        return self.bandwidth_bytes_per_s * self.directions

    def time_s(self, size_bytes: float) -> float:
        """Reduce-scatter (or all-gather) of a `size_bytes` buffer along this axis."""
        k = self.size
        if k <= 1 or size_bytes <= 0:
            return 0.0
        if self.bandwidth_bytes_per_s <= 0:
            return float("inf")
        return (k - 1) * (self.latency_s + size_bytes / (k * self.effective_bytes_per_s))


@dataclass(frozen=True)
class Box:
    """A group that is a sub-box of a torus: its active axes (extent > 1), their
    extents, and the device at each coordinate."""

    axes: tuple[int, ...]
    extents: tuple[int, ...]
    at: dict[Coord, int]

    def lines(self, axis: int) -> tuple[tuple[int, ...], ...]:
        """The parallel lines along `axis`, each ordered by its coordinate on it."""
        groups: dict[Coord, list[tuple[int, int]]] = {}
        for c, d in self.at.items():
            key = c[:axis] + c[axis + 1 :]
            groups.setdefault(key, []).append((c[axis], d))
        return tuple(tuple(d for _, d in sorted(g)) for _, g in sorted(groups.items()))


def torus_box(cluster: Cluster, devices: Sequence[int]) -> Box | None:
    """The box `devices` fill on the cluster's torus, or None when they are not a
    product of contiguous coordinate ranges (or the cluster is not a torus)."""
    torus = cluster.spec.torus
    if torus is None or len(devices) < 2:
        return None
    coords: list[Coord] = [tuple(cluster.graph.nodes[f"dev{d}"]["coord"]) for d in devices]
    if len(set(coords)) != len(coords):
        return None
    extents = []
    for axis in range(len(torus.dims)):
        values = sorted({c[axis] for c in coords})
        if values != list(range(values[0], values[-1] + 1)):
            return None
        extents.append(len(values))
    if math.prod(extents) != len(coords):
        return None
    active = tuple(a for a, k in enumerate(extents) if k > 1)
    return Box(active, tuple(extents[a] for a in active), dict(zip(coords, devices, strict=True)))


def split_box(box: Box, along: Sequence[int], across: Sequence[int]) -> list[tuple[int, ...]]:
    """Groups that vary along the `along` axes, one per coordinate on the `across`
    axes, each ordered by its coordinates."""
    groups: dict[Coord, list[tuple[Coord, int]]] = {}
    for c, d in box.at.items():
        key = tuple(c[a] for a in across)
        groups.setdefault(key, []).append((tuple(c[a] for a in along), d))
    return [tuple(d for _, d in sorted(g)) for _, g in sorted(groups.items())]
