"""Flat records of a run: per request, per iteration (or leap), per stage execution,
and what each stage, replica and link did over the run (`RunRecords`).

Request records are columns preallocated for every request of the workload (the
arrival generator knows how many), filled in when a request finishes or is rejected;
iteration records are appended to typed arrays. No per-request Python objects outlive
the request, and `to_frames` turns the columns into pandas DataFrames afterwards.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.engine.request import Req
from sim.plan.deploy import Deployment, Edge
from sim.workload.arrivals import Arrivals

PENDING, FINISHED, REJECTED = 0, 1, 2


def _columns(arrays: dict[str, array]) -> dict[str, np.ndarray]:
    """Typed arrays as numpy columns (empty ones keep their dtype)."""
    return {
        k: np.frombuffer(v, dtype=v.typecode) if len(v) else np.array([], dtype=v.typecode)
        for k, v in arrays.items()
    }


PHASES = ("prefill", "decode", "mixed")


class Recorder:
    def __init__(
        self,
        n_requests: int,
        on_progress: Callable[[int], None] | None = None,
        keep_iterations: bool = True,
    ):
        self.n = n_requests
        self.keep_iterations = keep_iterations
        # Iteration statistics the summary needs, kept even when rows are not.
        self.iterations_total = 0
        self.kv_share_seconds = 0.0  # Σ (blocks used / total) · duration
        self.kv_share_peak = 0.0
        self.engines: set[tuple[int, int]] = set()
        self.replica = np.full(n_requests, -1, dtype=np.int32)
        self.scheduled_s = np.full(n_requests, np.nan)
        self.first_token_s = np.full(n_requests, np.nan)
        self.finish_s = np.full(n_requests, np.nan)
        self.preemptions = np.zeros(n_requests, dtype=np.int32)
        # prompt tokens found in the prefix cache at first admission (prefix caching)
        self.cached_tokens = np.zeros(n_requests, dtype=np.int64)
        self.status = np.zeros(n_requests, dtype=np.int8)
        # sessions: when each turn was released (None when arrivals are all known)
        self.arrived_s = np.full(n_requests, np.nan)
        self.on_close: Callable[[Req], None] | None = None
        self.reasons: dict[int, str] = {}
        self.closed = 0
        self._on_progress = on_progress
        self._it: dict[str, array] = {
            "replica": array("i"),
            "engine": array("i"),
            "start_s": array("d"),
            "end_s": array("d"),
            "iterations": array("q"),
            "prefill_tokens": array("q"),
            "decode_seqs": array("q"),
            "decode_kv_tokens": array("q"),
            "prefills": array("i"),
            "tokens_out": array("q"),
            "kv_blocks_used": array("q"),
            "kv_blocks_total": array("q"),
        }
        self.all_closed: Callable[[], None] | None = None
        self._spans: dict[str, array] = {
            "replica": array("i"),
            "stage": array("i"),
            "engine": array("i"),
            "microbatch": array("i"),
            "start_s": array("d"),
            "end_s": array("d"),
            "phase": array("b"),
            "tokens": array("q"),
        }

    def _close(self) -> None:
        self.closed += 1
        if self._on_progress is not None:
            self._on_progress(self.closed)
        if self.closed == self.n and self.all_closed is not None:
            self.all_closed()

    def finish(self, req: Req, t: float) -> None:
        i = req.id
        self.replica[i] = req.replica
        self.scheduled_s[i] = req.scheduled_s
        self.first_token_s[i] = req.first_token_s
        self.finish_s[i] = t
        self.preemptions[i] = req.preemptions
        if req.cached:
            self.cached_tokens[i] = req.cached
        self.status[i] = FINISHED
        if self.on_close is not None:
            self.on_close(req)
        self._close()

    def reject(self, req: Req, reason: str) -> None:
        self.replica[req.id] = req.replica
        self.status[req.id] = REJECTED
        self.reasons[req.id] = reason
        if self.on_close is not None:
            self.on_close(req)
        self._close()

    def iteration(
        self,
        replica: int,
        engine: int,
        start: float,
        end: float,
        iterations: int,
        prefill_tokens: int,
        decode_seqs: int,
        kv_tokens: int,
        prefills: int,
        tokens_out: int,
        blocks_used: int,
        blocks_total: int,
        block_seconds: float | None = None,
        blocks_peak: int | None = None,
    ) -> None:
        """`iterations` steps from `start` to `end` (a leap when more than one);
        `blocks_used` is what they leave in use, `block_seconds` (∫ blocks dt, default
        blocks_used × duration) and `blocks_peak` what they held on the way."""
        self.iterations_total += iterations
        if blocks_total > 0:
            held = blocks_used * (end - start) if block_seconds is None else block_seconds
            self.kv_share_seconds += held / blocks_total
            share = (blocks_used if blocks_peak is None else blocks_peak) / blocks_total
            if share > self.kv_share_peak:
                self.kv_share_peak = share
        self.engines.add((replica, engine))
        if not self.keep_iterations:
            return
        it = self._it
        it["replica"].append(replica)
        it["engine"].append(engine)
        it["start_s"].append(start)
        it["end_s"].append(end)
        it["iterations"].append(iterations)
        it["prefill_tokens"].append(prefill_tokens)
        it["decode_seqs"].append(decode_seqs)
        it["decode_kv_tokens"].append(kv_tokens)
        it["prefills"].append(prefills)
        it["tokens_out"].append(tokens_out)
        it["kv_blocks_used"].append(blocks_used)
        it["kv_blocks_total"].append(blocks_total)

    def stage_span(
        self,
        replica: int,
        stage: int,
        engine: int,
        microbatch: int,
        start: float,
        end: float,
        phase: str,
        tokens: int,
    ) -> None:
        """A stage busy with one micro-batch (kept with the iteration rows)."""
        if not self.keep_iterations:
            return
        sp = self._spans
        sp["replica"].append(replica)
        sp["stage"].append(stage)
        sp["engine"].append(engine)
        sp["microbatch"].append(microbatch)
        sp["start_s"].append(start)
        sp["end_s"].append(end)
        sp["phase"].append(PHASES.index(phase))
        sp["tokens"].append(tokens)

    def stages_frame(self) -> pd.DataFrame:
        """One row per (stage, micro-batch) execution: the pipeline timeline."""
        cols = _columns(self._spans)
        phase = pd.Categorical.from_codes(cols.pop("phase"), categories=pd.Index(list(PHASES)))
        frame = pd.DataFrame(cols)
        frame["phase"] = pd.Series(phase)
        return frame

    def iterations_frame(self) -> pd.DataFrame:
        return pd.DataFrame(_columns(self._it))

    def requests_frame(
        self,
        arrival_s: np.ndarray,
        prompt: np.ndarray,
        output: np.ndarray,
        cls: np.ndarray,
        class_names: tuple[str, ...],
    ) -> pd.DataFrame:
        status = np.array(["pending", "finished", "rejected"])[self.status]
        reason = np.full(self.n, "", dtype=object)
        for i, why in self.reasons.items():
            reason[i] = why
        return pd.DataFrame(
            {
                "request": np.arange(self.n),
                "class": pd.Categorical.from_codes(cls, categories=pd.Index(list(class_names))),
                "replica": self.replica,
                "arrival_s": arrival_s,
                "prompt_tokens": prompt,
                "output_tokens": output,
                "scheduled_s": self.scheduled_s,
                "first_token_s": self.first_token_s,
                "finish_s": self.finish_s,
                "preemptions": self.preemptions,
                "status": status,
                "reject_reason": reason,
            }
        )


@dataclass(frozen=True)
class StageRecord:
    """What one stage of one replica did over the run (per device of its TP group)."""

    replica: int
    stage: int
    busy_s: float
    comm_s: float
    flops: float  # as computed: padding and recomputation included
    model_flops: float  # the model's useful FLOPs
    bytes: float


@dataclass(frozen=True)
class RunRecords:
    """Everything a run leaves behind; statistics are computed from it (sim.results)."""

    deployment: Deployment
    arrivals: Arrivals
    recorder: Recorder
    stages: list[StageRecord]
    active_s: list[float]  # per replica: time with at least one step in flight
    kv_peak_blocks: list[int]  # per replica: the most blocks in use at once
    link_busy: dict[Edge, float]
    duration_s: float
    events: int
    wall_s: float
    kv_transfers: tuple[int, float] | None  # disaggregated: (transfers, bytes)
    # tiered KV (scheduler.kv_tiers): per tier, its traffic (sim.engine.run._kv_tiers)
    kv_tiers: dict[str, dict[str, float]] | None = None

    def requests_frame(self) -> pd.DataFrame:
        a = self.arrivals
        arrival_s = a.arrival_s if a.session_id is None else self.recorder.arrived_s
        frame = self.recorder.requests_frame(
            arrival_s, a.prompt_tokens, a.output_tokens, a.class_index, a.class_names
        )
        if a.prefix_id is not None:  # a workload with shared prefixes
            frame["prefix_id"] = a.prefix_id
            frame["cached_tokens"] = self.recorder.cached_tokens
        if a.session_id is not None:  # multi-turn sessions
            frame["session_id"] = a.session_id
            frame["turn"] = a.turn
            frame["think_s"] = a.think_s
        return frame
