"""Paged KV cache: a pool of fixed-size blocks per replica (vLLM's block manager).

A sequence holding `t` tokens of KV holds ceil(t / block_size) blocks. The manager
never hands out more blocks than it has (`allocate` raises), and keeps the KV bytes
of every device within its budget by construction: capacity is computed from the
device memory left after weights and activations.

Decoding sequences grow by one token a step and need a new block exactly when their
KV length is a multiple of the block size. The manager keeps a histogram of decoding
sequences by (kv − step) mod block_size, so the blocks that k future steps need are
counted in O(block_size) — without visiting the sequences.

With prefix caching (sim.engine.prefix_cache) the cached blocks that no request
references are not counted as used: they are free to take, and an allocation evicts as
many of them as it needs.
"""

from __future__ import annotations

from sim.engine.prefix_cache import PrefixCache


class Tally:
    """Blocks in use across the block managers of one replica (its virtual engines),
    and the most ever in use at once."""

    __slots__ = ("peak", "used")

    def __init__(self) -> None:
        self.used = 0
        self.peak = 0


class OutOfBlocks(RuntimeError):
    """Raised when a caller asks for more blocks than are free (a bug, not bad input)."""


class BlockManager:
    def __init__(
        self,
        total_blocks: int,
        block_size: int,
        watermark: float = 0.0,
        tally: Tally | None = None,
    ):
        if total_blocks < 0 or block_size < 1:
            raise ValueError("total_blocks must be >= 0 and block_size >= 1")
        self.total = total_blocks
        self.block_size = block_size
        self.watermark_blocks = int(watermark * total_blocks)
        self.used = 0
        self.peak = 0
        self.tally = tally if tally is not None else Tally()  # shared with sibling engines
        self.hist = [0] * block_size  # growing decoders by (kv - step) % block_size
        self.growers = 0  # sum(hist)
        self.cache: PrefixCache | None = None

    def enable_prefix_cache(self) -> PrefixCache:
        self.cache = PrefixCache(self)
        return self.cache

    # ------------------------------------------------------------------ blocks
    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    @property
    def free(self) -> int:
        return self.total - self.used

    def can_admit(self, blocks: int) -> bool:
        """Room for a new sequence's blocks, keeping the watermark free for growth."""
        return self.used + blocks <= self.total - self.watermark_blocks

    def allocate(self, blocks: int) -> None:
        if blocks > self.free:
            raise OutOfBlocks(f"asked for {blocks} blocks with {self.free} free")
        self.take(blocks)
        if self.cache is not None:
            self.cache.make_room(self.total - self.used)

    def release(self, blocks: int) -> None:
        if blocks > self.used:
            raise OutOfBlocks(f"releasing {blocks} blocks with {self.used} in use")
        self.give(blocks)

    def take(self, blocks: int) -> None:
        """Count `blocks` more as used (allocate's bookkeeping; the prefix cache's when a
        request references idle cached blocks)."""
        self.used += blocks
        if self.used > self.peak:
            self.peak = self.used
        tally = self.tally
        tally.used += blocks
        if tally.used > tally.peak:
            tally.peak = tally.used

    def give(self, blocks: int) -> None:
        self.used -= blocks
        self.tally.used -= blocks

    # ------------------------------------------------------------------ growth
    def add_grower(self, key: int) -> None:
        """A decoder starts growing; `key` is its KV length minus the current step."""
        self.hist[key % self.block_size] += 1
        self.growers += 1

    def remove_grower(self, key: int) -> None:
        self.hist[key % self.block_size] -= 1
        self.growers -= 1

    def needed_at(self, step: int) -> int:
        """New blocks the decode step `step` needs (one per sequence whose blocks are full)."""
        return self.hist[(-step) % self.block_size]

    def needed_over(self, step: int, steps: int) -> int:
        """New blocks the decode steps step .. step+steps-1 need together."""
        bs = self.block_size
        full, rest = divmod(steps, bs)
        total = full * self.growers
        for j in range(rest):
            total += self.hist[(-(step + j)) % bs]
        return total

    def max_steps(self, step: int, limit: int) -> int:
        """The most decode steps (≤ limit) that the free blocks can feed."""
        growers = self.growers
        if growers == 0:
            return limit
        bs = self.block_size
        free = self.free
        cycles = min(free // growers, limit // bs)
        steps = cycles * bs
        free -= cycles * growers
        while steps < limit:
            need = self.hist[(-(step + steps)) % bs]
            if need > free:
                break
            free -= need
            steps += 1
        return steps
