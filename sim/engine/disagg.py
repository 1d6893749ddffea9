"""Disaggregated serving: moving a request's KV cache from its prefill replica to a
decode replica (Splitwise, DistServe).

When a prefill replica produces a request's first token, the request leaves it: a
decode replica is chosen (its own router), and the KV cache — prompt tokens × KV bytes
per token of the whole model — is sent from every device of the prefill replica (each
holds its share of the layers and heads) to the decode replica's devices, pair by pair,
all at once. The transfer holds every link those routes cross for its duration, so KV
moves contend with pipeline sends and other KV moves on shared links; pairs whose
routes share a link split its bandwidth. The prefill replica frees the request's KV
blocks when the transfer ends; the decode replica admits it when it has room.

`layerwise` transfer sends each layer's KV while the next layer computes: only the last
layer's share is left to send after the prefill. The overlapped part adds to the links'
busy time but, in this model, does not delay other traffic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Generator, Sequence
from typing import Any

import simpy

from sim.cost.topology import Cluster
from sim.engine.replica import hold_links
from sim.engine.request import Req
from sim.engine.router import RouterPolicy
from sim.errors import LlmsimError


class KVPath:
    """The routes from one prefill replica's devices to one decode replica's devices."""

    def __init__(
        self,
        graph_cluster: Cluster,
        src: Sequence[str],
        dst: Sequence[str],
        pool: Any,
    ):
        routes = [graph_cluster.route(s, dst[i % len(dst)]) for i, s in enumerate(src)]
        load: Counter = Counter(e for r in routes for e in r.edges)
        self.shards = len(routes)
        self.edges = tuple(sorted(load))
        for e in self.edges:  # the joined graph already names every link uniquely
            pool.specs.setdefault(e, graph_cluster.link(*e))
        self.links = [pool.resource(e) for e in self.edges]
        self._bandwidth = []
        for r in routes:
            if not r.edges:
                self._bandwidth.append((float("inf"), 0.0))
                continue
            bw = min(graph_cluster.link(*e).bandwidth_bytes_per_s / load[e] for e in r.edges)
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


class KVHandoff:
    def __init__(
        self,
        env: simpy.Environment,
        decode: Sequence[Any],
        router: RouterPolicy,
        paths: dict[tuple[int, int], KVPath],
        kv_bytes_per_token: float,
        layerwise_fraction: float | None,
        busy: dict[tuple[str, str], float],
    ):
        self.env = env
        self.decode = list(decode)
        self.router = router
        self.paths = paths
        self.kv_bytes_per_token = kv_bytes_per_token
        self.layerwise_fraction = layerwise_fraction
        self.busy = busy
        self.bytes_moved = 0.0
        self.transfers = 0

    def send(self, req: Req, source: int, release: Callable[[], None]) -> None:
        """`req` finished its prefill on prefill replica `source`; `release` frees its
        blocks there once the KV has left."""
        target = self.decode[self.router.next_replica(self.decode)]
        target.expect(req)
        self.env.process(self._move(req, source, target, release))

    def _move(
        self, req: Req, source: int, target: Any, release: Callable[[], None]
    ) -> Generator[Any, Any, None]:
        path = self.paths[(source, target.index)]
        size = req.target * self.kv_bytes_per_token
        seconds = path.seconds(size)
        hidden = 0.0
        if self.layerwise_fraction is not None:  # all but the last layer went during prefill
            hidden = seconds * (1.0 - self.layerwise_fraction)
            seconds -= hidden
        if seconds > 0:
            yield from hold_links(self.env, path.links, seconds)
        for edge in path.edges:
            self.busy[edge] = self.busy.get(edge, 0.0) + seconds + hidden
        self.bytes_moved += size
        self.transfers += 1
        release()
        target.receive(req)
