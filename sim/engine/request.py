"""A request's mutable state inside the engine.

The engine never loops over a batch's requests on a decode step. A decoding request's
KV length and generated count are functions of the replica's decode-step counter:
kv = kv0 + (step − join_step), so nothing is written per token; the step at which it
finishes is known when it joins, and a heap keyed by that step finds the finishers.
Once finished, a request's times go into the run's record columns and the object is
dropped, so memory does not grow with finished requests beyond their records.
"""

from __future__ import annotations

WAITING, PREFILLING, DECODING, SWAPPED, DONE, REJECTED = range(6)


class Req:
    __slots__ = (
        "arrival_s",
        "blocks",
        "cached",
        "computed",
        "finish_step",
        "first_token_s",
        "generated",
        "id",
        "join_step",
        "kv0",
        "output",
        "preemptions",
        "prefilled",
        "prefix",
        "prefix_tokens",
        "prompt",
        "replica",
        "scheduled_s",
        "shared",
        "state",
        "target",
        "window_step",
    )

    def __init__(
        self,
        rid: int,
        arrival_s: float,
        prompt: int,
        output: int,
        prefix: int = -1,
        prefix_tokens: int = 0,
    ):
        self.id = rid
        self.arrival_s = arrival_s
        self.prompt = prompt
        self.output = output
        self.replica = -1
        self.generated = 0  # output tokens produced before the current decode stint
        self.target = prompt  # tokens the current (re)fill must have in cache
        self.prefilled = 0  # of those, already computed (chunked prefill)
        self.computed = 0  # positions whose KV was ever computed (recompute is not useful work)
        self.kv0 = 0  # KV tokens when the current decode stint began
        self.join_step = 0
        self.finish_step = 0
        self.window_step = -1  # decode step at which the KV reaches the sliding window
        self.blocks = 0  # KV blocks held outside the decode-phase accounting
        self.scheduled_s = -1.0
        self.first_token_s = -1.0
        self.preemptions = 0
        self.state = WAITING
        self.prefix = prefix  # shared prefix id (-1: none), its first prefix_tokens
        self.prefix_tokens = prefix_tokens
        self.shared = 0  # leading blocks held by reference in the prefix cache
        self.cached = 0  # prompt tokens found in the prefix cache at first admission

    def kv(self, step: int) -> int:
        """KV tokens cached at decode step `step` (valid while decoding)."""
        return self.kv0 + (step - self.join_step)

    def generated_at(self, step: int) -> int:
        return self.generated + (step - self.join_step)

    def __repr__(self) -> str:
        return f"Req({self.id}, prompt={self.prompt}, output={self.output}, state={self.state})"
