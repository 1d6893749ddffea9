"""Routers: which replica a new request goes to (a registry of small strategies).

A router sees the replicas' load as a real router does, through two numbers each:
requests outstanding (routed there and not finished), and KV load, the share of the
replica's KV blocks committed to running requests or asked for by the requests queued
there (so a burst routed in one instant is seen as it queues, not only once it runs).
Ties go to the lowest replica index, so routing is deterministic given the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.registry import ROUTERS


class ReplicaView(Protocol):
    index: int

    @property
    def outstanding(self) -> int: ...

    @property
    def kv_load(self) -> float: ...


class RouterPolicy(Protocol):
    def next_replica(self, replicas: Sequence[ReplicaView]) -> int: ...


@ROUTERS.register("round-robin")
class RoundRobin:
    def __init__(self, rng: np.random.Generator):
        self._next = 0

    def next_replica(self, replicas: Sequence[ReplicaView]) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


@ROUTERS.register("random")
class Random:
    """Uniform at random; draws in blocks from its own seeded stream."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._buf: list[float] = []

    def next_replica(self, replicas: Sequence[ReplicaView]) -> int:
        if not self._buf:
            self._buf = self._rng.random(4096).tolist()[::-1]
        return min(int(self._buf.pop() * len(replicas)), len(replicas) - 1)


@ROUTERS.register("least-outstanding")
class LeastOutstanding:
    def __init__(self, rng: np.random.Generator):
        pass

    def next_replica(self, replicas: Sequence[ReplicaView]) -> int:
        best, load = 0, replicas[0].outstanding
        for i in range(1, len(replicas)):
            o = replicas[i].outstanding
            if o < load:
                best, load = i, o
        return best


@ROUTERS.register("least-kv")
class LeastKV:
    """The replica with the least KV load (committed blocks plus queued demand)."""

    def __init__(self, rng: np.random.Generator):
        pass

    def next_replica(self, replicas: Sequence[ReplicaView]) -> int:
        best, load = 0, replicas[0].kv_load
        for i in range(1, len(replicas)):
            f = replicas[i].kv_load
            if f < load:
                best, load = i, f
        return best
