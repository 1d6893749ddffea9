"""Routers: which replica a new request goes to (a registry of small strategies).

A router sees the replicas' load as a real router does, through two numbers each:
requests outstanding (routed there and not finished), and KV load, the share of the
replica's KV blocks committed to running requests or asked for by the requests queued
there (so a burst routed in one instant is seen as it queues, not only once it runs).
Ties go to the lowest replica index, so routing is deterministic given the seed.

`cache-aware` also sees the request (its shared prefix id and length) and remembers
what it sent where, as SGLang's router keeps an approximate radix tree per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from sim.engine.request import Req
from sim.registry import ROUTERS


class ReplicaView(Protocol):
    index: int

    @property
    def outstanding(self) -> int: ...

    @property
    def kv_load(self) -> float: ...


class RouterPolicy(Protocol):
    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int: ...


@ROUTERS.register("round-robin")
class RoundRobin:
    def __init__(self, rng: np.random.Generator):
        self._next = 0

    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int:
        i = self._next % len(replicas)
        self._next += 1
        return i


@ROUTERS.register("random")
class Random:
    """Uniform at random; draws in blocks from its own seeded stream."""

    def __init__(self, rng: np.random.Generator):
        self._rng = rng
        self._buf: list[float] = []

    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int:
        if not self._buf:
            self._buf = self._rng.random(4096).tolist()[::-1]
        return min(int(self._buf.pop() * len(replicas)), len(replicas) - 1)


@ROUTERS.register("least-outstanding")
class LeastOutstanding:
    def __init__(self, rng: np.random.Generator):
        pass

    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int:
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

    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int:
        best, load = 0, replicas[0].kv_load
        for i in range(1, len(replicas)):
            f = replicas[i].kv_load
            if f < load:
                best, load = i, f
        return best


@ROUTERS.register("cache-aware")
class CacheAware:
    """Prefix affinity unless the load is imbalanced (SGLang's cache-aware router).

    The router keeps, per replica, the prefixes it has sent there and the size of that
    approximate tree (prefix tokens once each, plus every request's own tokens). When
    the replicas' outstanding requests differ by more than `BALANCE_ABS` and the most
    loaded has over `BALANCE_REL` times the least, the least loaded replica gets the
    request. Otherwise a request whose shared prefix is over `CACHE_THRESHOLD` of its
    prompt goes to the least loaded replica it sent that prefix to before; any other
    request (or a prefix sent nowhere yet) to the replica with the smallest tree. The
    tree is never evicted (SGLang's is, by size, on a timer): affinity outlives a
    replica's actual cache.
    """

    CACHE_THRESHOLD = 0.3  # prefix share of the prompt that makes affinity worth it
    BALANCE_ABS = 64  # outstanding requests
    BALANCE_REL = 1.5

    def __init__(self, rng: np.random.Generator):
        self._sent: list[set[int]] = []
        self._tree: list[int] = []

    def next_replica(self, replicas: Sequence[ReplicaView], req: Req) -> int:
        n = len(replicas)
        while len(self._sent) < n:
            self._sent.append(set())
            self._tree.append(0)
        loads = [r.outstanding for r in replicas]
        lo, hi = min(loads), max(loads)
        best = -1
        if hi - lo > self.BALANCE_ABS and hi > self.BALANCE_REL * lo:
            best = loads.index(lo)
        elif req.prefix >= 0 and req.prefix_tokens > self.CACHE_THRESHOLD * req.prompt:
            holders = [i for i in range(n) if req.prefix in self._sent[i]]
            if holders:
                best = min(holders, key=lambda i: (loads[i], i))
        if best < 0:
            best = min(range(n), key=lambda i: (self._tree[i], loads[i], i))
        self._tree[best] += req.prompt - req.prefix_tokens
        if req.prefix >= 0 and req.prefix not in self._sent[best]:
            self._sent[best].add(req.prefix)
            self._tree[best] += req.prefix_tokens
        return best
