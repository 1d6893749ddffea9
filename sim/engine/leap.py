"""Leaps: a stretch of identical decode steps run as one event.

With one stage and one virtual engine, nothing can change a decode-only step until a
request finishes, reaches its sliding window, runs out of KV blocks or arrives. So k
such steps are priced in one vectorised call (their KV grows by one token per growing
sequence per step), covered by one timeout, and the state advances by k in O(1)
(running sums, the finish heap and the block histogram). An arrival interrupts the
leap, which is then cut at the first step boundary at or after the arrival: exactly
where a per-step simulation would next have looked at the queue, so leaping never
changes results (tests/test_engine.py compares leaping with stepping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.cost.stage import StageCost
from sim.engine.kv_cache import BlockManager
from sim.engine.policies.base import BatchingPolicy, Step
from sim.engine.state import ReplicaState

MAX_LEAP = 1 << 16


def leap_bound(st: ReplicaState, policy: BatchingPolicy, step: Step) -> int:
    """How many identical decode steps may run from now before anything can change."""
    k = min(
        step.repeat,
        st.next_finish_step() - st.step,
        st.next_window_step() - st.step,
        policy.decode_bound(),
        MAX_LEAP,
    )
    return max(k, 1)


@dataclass(frozen=True)
class Leap:
    """k decode steps of `seqs` sequences (`real` of them not padding) from `start`,
    their KV total starting at `kv0` (`real_kv0` without padding) and growing by
    `growth` (`real_growth`) a step; `ends[j]` is when step j + 1 ends."""

    start: float
    seqs: int
    real: int
    kv0: int
    real_kv0: int
    growth: int
    real_growth: int
    ends: np.ndarray
    device: np.ndarray  # cumulative device seconds after each step

    @staticmethod
    def plan(
        cost: StageCost,
        st: ReplicaState,
        step: Step,
        k: int,
        start: float,
        host_s: float = 0.0,
        overlap: bool = False,
    ) -> Leap:
        """Each step takes its device time and the runtime's host time: their sum, or
        the longer of the two where the host works ahead (`overlap`)."""
        seqs = st.decoders + step.pad_decode_seqs
        kv0 = st.kv_sum + step.pad_decode_kv
        growth = st.growing + step.pad_decode_seqs
        device = cost.decode_times(seqs, kv0, growth, k)
        times = device
        if host_s:
            times = np.maximum(device, host_s) if overlap else device + host_s
        ends = np.cumsum(times) + start
        used = np.cumsum(device)
        return Leap(start, seqs, st.decoders, kv0, st.kv_sum, growth, st.growing, ends, used)

    def device_s(self, steps: int) -> float:
        """Device time of the first `steps` steps (the rest of the leap is host time)."""
        return float(self.device[steps - 1])

    @staticmethod
    def blocks_used(blocks: BlockManager, step: int, steps: int) -> list[int]:
        """Blocks in use after each of the next `steps` decode steps from `step`, as the
        decoders' growth takes new blocks (before anything finishes)."""
        used, out = blocks.used, []
        for j in range(steps):
            used += blocks.needed_at(step + j)
            out.append(used)
        return out

    def block_seconds(self, used_after: list[int]) -> float:
        """∫ blocks in use dt over the steps done: step j holds `used_after[j]` for its
        duration, as a step-by-step run records it."""
        n = len(used_after)
        durations = np.diff(self.ends[:n], prepend=self.start)
        return float(np.dot(durations, used_after))

    def end(self, steps: int) -> float:
        """When the first `steps` steps are done."""
        return float(self.ends[steps - 1])

    def duration(self, steps: int) -> float:
        return self.end(steps) - self.start

    def steps_by(self, t: float) -> int:
        """Steps done at the first step boundary at or after `t` (at least one)."""
        return min(int(np.searchsorted(self.ends, t, side="left")), len(self.ends) - 1) + 1
