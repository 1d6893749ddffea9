"""The SimPy resources of a run: each pipeline stage's TP group and each directed link.

A stage is a resource of capacity one: a micro-batch holds it while it computes, so the
micro-batches of several virtual engines queue for it. A link is a resource of capacity
one, created when a transfer first needs it: a transfer holds every link of its route
for its whole duration (circuit-style), acquiring them in a fixed (sorted) order so
two transfers never deadlock; traffic that shares a link therefore queues.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Any

import simpy

from sim.cost.stage import StageCost
from sim.plan.deploy import Edge, Path, StagePlan


class Links:
    """One resource per named directed link, and the seconds each was busy."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.resources: dict[Edge, simpy.Resource] = {}
        self.busy: dict[Edge, float] = {}

    def resource(self, edge: Edge) -> simpy.Resource:
        found = self.resources.get(edge)
        if found is None:
            found = self.resources[edge] = simpy.Resource(self.env, 1)
        return found

    def charge(self, edges: Iterable[Edge], seconds: float) -> None:
        for edge in edges:
            self.busy[edge] = self.busy.get(edge, 0.0) + seconds

    def hold(self, edges: tuple[Edge, ...], seconds: float) -> Generator[Any, Any, None]:
        """Take every link (in the given order), keep them for `seconds`, let them go."""
        links = [self.resource(e) for e in edges]
        requests = [link.request() for link in links]
        for r in requests:
            yield r
        yield self.env.timeout(seconds)
        for link, r in zip(links, requests, strict=True):
            link.release(r)

    def transfer(self, path: Path, size_bytes: float) -> Generator[Any, Any, None]:
        """Move `size_bytes` along `path`, holding its links, and charge them."""
        seconds = path.seconds(size_bytes)
        if seconds <= 0:
            return
        yield from self.hold(path.edges, seconds)
        self.charge(path.edges, seconds)


@dataclass
class Stage:
    """A stage of a running replica: its plan, its resource and what it has done."""

    plan: StagePlan
    resource: simpy.Resource
    busy_s: float = 0.0
    comm_s: float = 0.0
    flops: float = 0.0  # per device
    bytes: float = 0.0  # per device

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def cost(self) -> StageCost:
        return self.plan.cost

    @property
    def devices(self) -> tuple[int, ...]:
        return self.plan.devices
