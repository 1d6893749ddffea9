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

Tiered KV (`scheduler.kv_tiers`, LMCache / SGLang HiCache style)
  * An evicted block is copied to host DRAM instead of being dropped, and a block
    evicted from a full host tier (least recently used prefix, chain tail first) to the
    local disk; a full disk drops its LRU tails. Prefix p's chain is then its first
    `resident[p]` blocks on the GPU, the next `lower[p][0]` in host DRAM, the next
    `lower[p][1]` on disk, so every tier stays reachable through the one above it.
  * A request finding blocks in a lower tier reloads them to the GPU (`reload`) when
    that is no slower than recomputing them (`worth`, set by the engine); the copies'
    bytes are queued in `pending` for the engine, which holds the PCIe and NVMe links
    for them (reloads before the step that uses them, eviction copies alongside).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
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
        # Tiered KV: blocks each lower tier (0 host DRAM, 1 disk) holds at most; empty
        # when tiers are off (evicted blocks are dropped).
        self.caps: list[int] = []
        self.lower: dict[int, list[int]] = {}  # prefix id -> blocks per lower tier
        self.tier_used: list[int] = []
        self._tier_lru: list[OrderedDict[int, None]] = []
        # copies the engine has not carried yet: ("write" | "reload", tier, blocks)
        self.pending: list[tuple[str, int, int]] = []
        self.hits_tier: list[int] = []  # blocks reloaded from each tier
        self.written_tier: list[int] = []  # blocks copied into each tier
        self.tier_peak: list[int] = []
        # (tier, first block, blocks) -> whether reloading beats recomputing
        self.worth: Callable[[int, int, int], bool] = lambda tier, first, blocks: True

    def enable_tiers(self, caps: list[int]) -> None:
        """Keep evicted blocks in lower tiers of `caps` blocks each (host, then disk)."""
        self.caps = list(caps)
        n = len(caps)
        self.tier_used = [0] * n
        self._tier_lru = [OrderedDict() for _ in range(n)]
        self.hits_tier = [0] * n
        self.written_tier = [0] * n
        self.tier_peak = [0] * n

    def lower_hits(self, prefix: int, limit: int) -> list[int]:
        """Blocks of `prefix` beyond the GPU's hits that each lower tier would reload
        for a request using at most `limit` blocks: a tier's run is taken whole when
        reloading it beats recomputing it, and a deeper tier only after a whole one."""
        have = self.lower.get(prefix)
        if not have:
            return []
        out = []
        first = self.resident.get(prefix, 0)
        for tier, n in enumerate(have):
            take = min(n, limit - first)
            if take <= 0 or not self.worth(tier, first, take):
                break
            out.append(take)
            first += take
            if take < n:
                break
        return out

    def reload(self, prefix: int, takes: list[int]) -> None:
        """Bring the leading lower-tier blocks `takes` (per tier) of `prefix` back to
        the GPU as idle cached blocks (the caller references them at once)."""
        total = sum(takes)
        if total <= 0:
            return
        have = self.lower[prefix]
        for tier, take in enumerate(takes):
            if take:
                self._drop(prefix, tier, take)
                self.hits_tier[tier] += take
                self.pending.append(("reload", tier, take))
        # taken from the heads of the leading tiers, so what stays below still follows on
        if not any(have):
            del self.lower[prefix]
        self.resident[prefix] = self.resident.get(prefix, 0) + total
        self.idle += total
        self._lru[prefix] = None
        self._lru.move_to_end(prefix)

    def _drop(self, prefix: int, tier: int, n: int) -> None:
        have = self.lower[prefix]
        have[tier] -= n
        self.tier_used[tier] -= n
        if have[tier] == 0:
            self._tier_lru[tier].pop(prefix, None)

    def _demote(self, prefix: int, blocks: int, tier: int) -> None:
        """`blocks` blocks from the tail of `prefix`'s run in the tier above `tier` go to
        the head of its run in `tier` (dropped past the last tier), which then makes
        room by demoting its least recently used prefixes' tails in turn."""
        if tier >= len(self.caps) or self.caps[tier] <= 0:
            # dropped: the deeper runs of this prefix lose their chain
            have = self.lower.get(prefix)
            if have is not None:
                for t in range(tier, len(have)):
                    if have[t]:
                        self._drop(prefix, t, have[t])
                if not any(have):
                    del self.lower[prefix]
            return
        have = self.lower.setdefault(prefix, [0] * len(self.caps))
        have[tier] += blocks
        self.tier_used[tier] += blocks
        self.written_tier[tier] += blocks
        self.pending.append(("write", tier, blocks))
        lru = self._tier_lru[tier]
        lru[prefix] = None
        lru.move_to_end(prefix)
        while self.tier_used[tier] > self.caps[tier]:
            victim = next(iter(lru))
            take = min(self.lower[victim][tier], self.tier_used[tier] - self.caps[tier])
            self._drop(victim, tier, take)
            self._demote(victim, take, tier + 1)
        self.tier_peak[tier] = max(self.tier_peak[tier], self.tier_used[tier])

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
            lower = self.lower.get(prefix)
            if lower is not None:  # recomputed: the lower tiers' copies of these go
                covered = full - have
                for tier, n in enumerate(lower):
                    take = min(n, covered)
                    if take:
                        self._drop(prefix, tier, take)
                    covered -= take
                if not any(lower):
                    del self.lower[prefix]
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
                if self.caps:
                    self._demote(prefix, take, 0)
                if self.resident[prefix] == 0:
                    del self.resident[prefix]
                    del self._lru[prefix]
                    self._holders.pop(prefix, None)
            if self.idle <= room:
                return
