"""Disaggregated serving: moving a request's KV cache from its prefill replica to a
decode replica (Splitwise, DistServe).

When a prefill replica produces a request's first token, the request leaves it: a
decode replica is chosen (by its own router), and the KV cache (prompt tokens × KV bytes
per token of the whole model) crosses the links between them along the deployment's
`KVPath` (sim.plan.deploy). The transfer holds every link those routes cross for its
duration, so KV moves contend with pipeline sends and other KV moves on shared links.
The prefill replica frees the request's KV blocks when the transfer ends; the decode
replica admits it when it has room.

`layerwise` transfer sends each layer's KV while the next layer computes: only the last
layer's share is left to send after the prefill. The overlapped part adds to the links'
busy time but, in this model, does not delay other traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from sim.engine.request import Req
from sim.engine.resources import Links
from sim.engine.router import RouterPolicy
from sim.plan.deploy import Disaggregation


class KVHandoff:
    def __init__(
        self,
        env: simpy.Environment,
        decode: Sequence[Any],
        router: RouterPolicy,
        plan: Disaggregation,
        links: Links,
    ):
        self.env = env
        self.decode = list(decode)
        self.router = router
        self.plan = plan
        self.links = links
        self.bytes_moved = 0.0
        self.transfers = 0

    def send(self, req: Req, source: int, release: Callable[[], None]) -> None:
        """`req` finished its prefill on prefill replica `source`; `release` frees its
        blocks there once the KV has left."""
        target = self.decode[self.router.next_replica(self.decode, req)]
        target.expect(req)
        self.env.process(self._move(req, source, target, release))

    def _move(
        self, req: Req, source: int, target: Any, release: Callable[[], None]
    ) -> Generator[Any, Any, None]:
        path = self.plan.paths[(source, target.index)]
        size = req.target * self.plan.kv_bytes_per_token
        seconds = path.seconds(size)
        hidden = 0.0
        if self.plan.layerwise_fraction is not None:  # all but the last layer went early
            hidden = seconds * (1.0 - self.plan.layerwise_fraction)
            seconds -= hidden
        if seconds > 0:
            yield from self.links.hold(path.edges, seconds)
        self.links.charge(path.edges, seconds + hidden)
        self.bytes_moved += size
        self.transfers += 1
        release()
        target.receive(req)
