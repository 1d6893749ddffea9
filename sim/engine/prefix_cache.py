"""Automatic prefix caching (vLLM's hashed blocks): full KV blocks of a shared prompt
prefix stay in the block pool after their request and are found by the next request
that opens with the same prefix, which then computes only its uncached suffix.

What it models
  * A block is identified by the hash chain of the tokens up to its end, so block i of a
    prefix is reachable only through blocks 0 .. i-1: what a replica holds of prefix p is
    its first `resident[p]` full blocks. Requests carry no real tokens (a prefix is an id
    and a length, sim.workload), so only a prefix's full blocks can be shared; the rest
    of a prompt, and the prefix's partial last block, are the request's own.
  * A request references the leading blocks it found (`req.shared`); a block's
    reference count is how many requests reach it, so the referenced blocks of p are
    the first max(reach) of them. Referenced blocks count as used; blocks nobody
    references (`idle`) stay cached but count as free, and are evicted only when an
    allocation needs their room: least recently used prefix first, and within it from
    the end of the chain (vLLM frees a request's blocks tail first), so no block is
    evicted while referenced and the chain stays reachable.
  * A request registers its prefix blocks when its prefill has computed them (not at
    admission): requests admitted together before that compute their own copies. A
    request whose prefill completes the prefix then adopts the cached blocks and frees
    its duplicates (vLLM keeps both until the request ends: a little less memory here).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Protocol


class BlockPool(Protocol):
    """What the cache needs of its block manager (sim.engine.kv_cache): counting blocks
    as used when a request references idle cached ones, and as free when none does."""

    def take(self, blocks: int) -> None: ...

    def give(self, blocks: int) -> None: ...


class PrefixCache:
    def __init__(self, blocks: BlockPool):
        self.blocks = blocks
        self.resident: dict[int, int] = {}  # prefix id -> leading blocks held
        self._holders: dict[int, Counter[int]] = {}  # prefix id -> reach -> requests
        self._lru: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.idle = 0  # resident blocks no request references
        self.evicted = 0  # blocks evicted over the run

    def reach(self, prefix: int) -> int:
        """Leading blocks of `prefix` referenced by some request."""
        holders = self._holders.get(prefix)
        return max(holders) if holders else 0

    def hits(self, prefix: int, limit: int) -> int:
        """Leading cached blocks a request of `prefix` can use (at most `limit`)."""
        return min(self.resident.get(prefix, 0), limit)

    def cost(self, prefix: int, hits: int) -> int:
        """Idle blocks that referencing `hits` blocks of `prefix` turns into used ones."""
        return max(0, hits - self.reach(prefix))

    def ref(self, prefix: int, hits: int) -> None:
        if hits <= 0:
            return
        old = self.reach(prefix)
        self._holders.setdefault(prefix, Counter())[hits] += 1
        moved = max(0, hits - old)
        self.idle -= moved
        self.blocks.take(moved)
        self._lru[prefix] = None
        self._lru.move_to_end(prefix)

    def unref(self, prefix: int, hits: int) -> None:
        if hits <= 0:
            return
        old = self.reach(prefix)
        holders = self._holders[prefix]
        holders[hits] -= 1
        if holders[hits] == 0:
            del holders[hits]
        moved = old - self.reach(prefix)
        self.idle += moved
        self.blocks.give(moved)
        self._lru.move_to_end(prefix)

    def insert(self, prefix: int, full: int) -> None:
        """A request computed the first `full` blocks of `prefix`: they are cached
        (unreferenced; the caller freed the blocks they replace first)."""
        have = self.resident.get(prefix, 0)
        if full > have:
            self.resident[prefix] = full
            self.idle += full - have
            self._lru[prefix] = None
            self._lru.move_to_end(prefix)

    def make_room(self, room: int) -> None:
        """Evict idle blocks, least recently used prefix first, until at most `room`
        remain (the blocks no request holds)."""
        if self.idle <= room:
            return
        for prefix in list(self._lru):
            spare = self.resident[prefix] - self.reach(prefix)
            take = min(spare, self.idle - room)
            if take > 0:
                self.resident[prefix] -= take
                self.idle -= take
                self.evicted += take
                if self.resident[prefix] == 0:
                    del self.resident[prefix]
                    del self._lru[prefix]
                    self._holders.pop(prefix, None)
            if self.idle <= room:
                return
