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
    """A stage of a running replica: its plan, its resource and what it has done.

    An execution is opened when it starts (`begin`, with what it will have done by its
    planned end) and closed when it ends (`end`), which charges it; a run cut short by
    `engine.until_s` settles the open one (`settle`): busy up to the cut, and its FLOPs
    and bytes in proportion, so no utilisation exceeds 1."""

    plan: StagePlan
    resource: simpy.Resource
    busy_s: float = 0.0
    comm_s: float = 0.0
    flops: float = 0.0  # per device, as computed (padding and recomputation included)
    model_flops: float = 0.0  # per device, the model's useful FLOPs only
    bytes: float = 0.0  # per device
    _open: tuple[float, float, float, float, float, float] | None = None

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def cost(self) -> StageCost:
        return self.plan.cost

    @property
    def devices(self) -> tuple[int, ...]:
        return self.plan.devices

    def begin(
        self,
        start: float,
        seconds: float,
        flops: float,
        model_flops: float,
        moved: float,
        comm: float,
    ) -> None:
        self._open = (start, seconds, flops, model_flops, moved, comm)

    def end(
        self,
        end: float,
        done: tuple[float, float, float, float] | None = None,
        busy_s: float | None = None,
    ) -> None:
        """Charge the open execution, ended at `end`; `done` (FLOPs, model FLOPs, bytes,
        communication seconds) when it did less than it planned (a leap cut short), and
        `busy_s` when the devices were busy for less than all of it (a leap's host time
        between its steps)."""
        assert self._open is not None
        start, _, flops, model_flops, moved, comm = self._open
        if done is not None:
            flops, model_flops, moved, comm = done
        self.busy_s += end - start if busy_s is None else busy_s
        self.flops += flops
        self.model_flops += model_flops
        self.bytes += moved
        self.comm_s += comm
        self._open = None

    def settle(self, now: float) -> None:
        """The run stopped at `now`: charge what the open execution did before it."""
        if self._open is None:
            return
        start, seconds, flops, model_flops, moved, comm = self._open
        share = min(1.0, max(0.0, (now - start) / seconds)) if seconds > 0 else 1.0
        self.busy_s += max(0.0, now - start)
        self.flops += flops * share
        self.model_flops += model_flops * share
        self.bytes += moved * share
        self.comm_s += comm * share
        self._open = None
