"""What one replica (one virtual engine) holds between iterations.

Queues of waiting, swapped-out and prefilling requests; the decoding set; and running
sums that make a decode step O(1): the number of decoders, the KV tokens they read
(`kv_sum`), how many of them still grow (a sliding window stops growth), and heaps of
the decode steps at which a decoder finishes or reaches its window.
"""

from __future__ import annotations

import heapq
from collections import deque

from sim.engine.kv_cache import BlockManager
from sim.engine.request import DECODING, DONE, Req

NEVER = 1 << 62


class Queue(deque[Req]):
    """A FIFO of requests that keeps the tokens they will cache before their first
    token (`tokens`): the demand a router sees queued at a replica."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def append(self, req: Req) -> None:
        self.tokens += req.target
        super().append(req)

    def appendleft(self, req: Req) -> None:
        self.tokens += req.target
        super().appendleft(req)

    def popleft(self) -> Req:
        req = super().popleft()
        self.tokens -= req.target
        return req


class ReplicaState:
    def __init__(self, blocks: BlockManager, window: int | None, paged: bool):
        self.blocks = blocks
        self.window = window
        self.paged = paged  # decode growth draws blocks (vLLM), or KV was reserved (Orca)
        self.waiting = Queue()
        self.swapped: deque[Req] = deque()
        self.incoming = Queue()  # prefilled elsewhere, KV arrived (disaggregated)
        self.prefilling: list[Req] = []
        self.running: dict[int, Req] = {}
        self.step = 0  # decode steps done
        self.kv_sum = 0  # KV tokens the decoders read in a step
        self.growing = 0  # decoders whose KV still grows
        self._finish: list[tuple[int, int, Req]] = []
        self._window: list[tuple[int, int, Req]] = []
        self.outstanding = 0  # requests routed here and not finished

    # ------------------------------------------------------------------ decoding set
    def kept(self, kv: int) -> int:
        return kv if self.window is None else min(kv, self.window)

    def _key(self, req: Req) -> int:
        return req.kv0 - req.join_step

    def start_decode(self, req: Req) -> None:
        """`req` has `req.target` tokens cached and `req.generated` tokens out."""
        req.state = DECODING
        req.join_step = self.step
        req.kv0 = req.target
        req.finish_step = self.step + (req.output - req.generated)
        self.running[req.id] = req
        heapq.heappush(self._finish, (req.finish_step, req.id, req))
        self.kv_sum += self.kept(req.kv0)
        if self.window is None or req.kv0 < self.window:
            self.growing += 1
            if self.paged:
                self.blocks.add_grower(self._key(req))
            if self.window is not None:
                req.window_step = self.step + (self.window - req.kv0)
                heapq.heappush(self._window, (req.window_step, req.id, req))
        else:
            req.window_step = -1

    def leave_decode(self, req: Req) -> int:
        """Take `req` out of the decoding set; return its KV tokens kept now."""
        del self.running[req.id]
        kv = req.kv(self.step)
        req.computed = max(req.computed, kv)
        kept = self.kept(kv)
        self.kv_sum -= kept
        if self.window is None or kv < self.window:
            self._stop_growing(req)
        req.generated = req.generated_at(self.step)
        return kept

    def advance(self, steps: int) -> None:
        """Every decoder generated `steps` more tokens."""
        self.step += steps
        self.kv_sum += self.growing * steps
        while self._window and self._window[0][0] <= self.step:
            at, _, req = heapq.heappop(self._window)
            if self.running.get(req.id) is req and req.window_step == at:
                self._stop_growing(req)

    def _stop_growing(self, req: Req) -> None:
        self.growing -= 1
        if self.paged:
            self.blocks.remove_grower(self._key(req))

    def next_finish_step(self) -> int:
        return self._peek(self._finish, "finish_step")

    def next_window_step(self) -> int:
        return self._peek(self._window, "window_step")

    def _peek(self, heap: list[tuple[int, int, Req]], field: str) -> int:
        """The earliest live entry of a heap; entries of requests that left the decoding
        set, or whose step moved, are stale and dropped."""
        while heap:
            at, _, req = heap[0]
            if self.running.get(req.id) is req and getattr(req, field) == at:
                return at
            heapq.heappop(heap)
        return NEVER

    def pop_finished(self) -> list[tuple[int, Req]]:
        """Decoders done by now, with the decode step at which each produced its last
        token, in finishing order. Their KV tokens kept are left in `req.kv0`."""
        done: list[tuple[int, Req]] = []
        heap = self._finish
        while heap and heap[0][0] <= self.step:
            at, _, req = heapq.heappop(heap)
            if self.running.get(req.id) is not req or req.finish_step != at:
                continue
            # KV at the finishing step: the last token's KV is never written.
            kv_done = req.kv(at)
            del self.running[req.id]
            kept = self.kept(kv_done)
            self.kv_sum -= self.kept(req.kv(self.step))
            if self.window is None or kv_done < self.window:
                self._stop_growing(req)
            req.generated = req.output
            req.kv0 = kept
            req.state = DONE
            done.append((at, req))
        return done

    @property
    def decoders(self) -> int:
        return len(self.running)
