"""Drawing a workload's requests: arrival times and prompt and output lengths.

Arrivals are renewal processes (Poisson, Gamma with a chosen coefficient of variation,
constant spacing), an on/off-modulated Poisson process, a burst at t = 0, or a replayed
trace; the first request arrives at t = 0, and with `duration_s` the arrivals are those
in [0, duration_s). Each request gets a class by weight, and lengths from its class
(sim.workload.lengths).

All randomness comes from `numpy.random.SeedSequence(seed)`, one child stream per
concern (arrivals, class choice, each class's prompt and output, shared prefixes), so
changing one part of a workload leaves the draws of the others as they were. Same seed,
same arrays, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import LlmsimError
from sim.spec.base import shown
from sim.spec.workload import (
    MAX_REQUESTS,
    MAX_TOKENS,
    PREFIX,
    BurstArrivals,
    ConstantArrivals,
    GammaArrivals,
    OnOffArrivals,
    PoissonArrivals,
    TraceSpec,
    WorkloadSpec,
)
from sim.workload import sessions
from sim.workload.lengths import draw_lengths
from sim.workload.traces import _header, load_table, resolve_path

# Spawn key of the prefix draws: class streams are below it, the routers' at 1000, 1001.
PREFIX_STREAM = 2000


@dataclass(frozen=True, eq=False)
class Arrivals:
    """The generated requests, in arrival order; the arrays are read-only."""

    arrival_s: np.ndarray  # float64, non-decreasing
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    class_index: np.ndarray  # int32 index into class_names
    class_names: tuple[str, ...]
    # Shared prefixes (workload.prefixes): each request's prefix id (-1: none) and its
    # tokens (0: none), both included in prompt_tokens; None when there are none.
    prefix_id: np.ndarray | None = None  # int32
    prefix_tokens: np.ndarray | None = None  # int64
    # Sessions (sim.workload.sessions): each request's session and turn, and the think
    # time before it; arrival_s is then the session's start (the engine releases later
    # turns when the previous one ends). The prefix is the session's history.
    session_id: np.ndarray | None = None  # int32
    turn: np.ndarray | None = None  # int32
    think_s: np.ndarray | None = None  # float64

    def __post_init__(self) -> None:
        for arr in (self.arrival_s, self.prompt_tokens, self.output_tokens, self.class_index):
            arr.setflags(write=False)
        for extra in (self.prefix_id, self.prefix_tokens, self.session_id, self.turn, self.think_s):
            if extra is not None:
                extra.setflags(write=False)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def to_frame(self) -> pd.DataFrame:
        columns = {
            "arrival_s": self.arrival_s,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "class": pd.Categorical.from_codes(self.class_index, pd.Index(self.class_names)),
        }
        if self.prefix_id is not None:
            columns["prefix_id"] = self.prefix_id
            columns["prefix_tokens"] = self.prefix_tokens
        if self.session_id is not None:
            columns["session_id"] = self.session_id
            columns["turn"] = self.turn
            columns["think_s"] = self.think_s
        return pd.DataFrame(columns)

    @classmethod
    def of_sessions(cls, turns: sessions.Turns) -> Arrivals:
        n = len(turns.turn)
        return cls(
            turns.start_s,
            turns.prompt_tokens,
            turns.output_tokens,
            np.zeros(n, dtype=np.int32),
            ("default",),
            turns.session_id.copy(),
            turns.prompt_tokens.copy(),
            turns.session_id,
            turns.turn,
            turns.think_s,
        )


def generate(spec: WorkloadSpec, seed: int, base_dir: Path | None = None) -> Arrivals:
    """Draw the requests of `spec`; relative paths resolve from `base_dir`, then the
    catalog roots."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise LlmsimError(f"expected a non-negative integer, got {shown(seed)}", key="seed")
    classes = spec.resolved_classes()
    # Child i of a SeedSequence depends only on i, so adding a class moves no stream.
    arrival_ss, class_ss, *class_ss_list = np.random.SeedSequence(int(seed)).spawn(2 + len(classes))
    if spec.trace is not None and _is_session_trace(spec.trace, base_dir):
        return Arrivals.of_sessions(_replay_sessions(spec, spec.trace, base_dir))
    if spec.trace is not None:
        times, prompts, outputs = _replay(spec, spec.trace, base_dir)
    else:
        times = _arrival_times(spec, np.random.default_rng(arrival_ss))
    n = len(times)
    if len(classes) == 1:
        class_index = np.zeros(n, dtype=np.int32)
    else:
        weights = np.array([c.weight for c in classes])
        rng = np.random.default_rng(class_ss)
        class_index = rng.choice(len(classes), size=n, p=weights / weights.sum()).astype(np.int32)
    if spec.trace is None:
        prompts = np.empty(n, dtype=np.int64)
        outputs = np.empty(n, dtype=np.int64)
        for i, cls in enumerate(classes):
            rows: slice | np.ndarray = slice(None)
            if len(classes) > 1:
                rows = np.flatnonzero(class_index == i)
            m = n if isinstance(rows, slice) else len(rows)
            prompt_rng, output_rng = (np.random.default_rng(s) for s in class_ss_list[i].spawn(2))
            if cls.lengths is not None:
                key = _source_key(spec, i, "lengths")
                table = load_table(
                    resolve_path(cls.lengths.path, base_dir, key + ".path"), "auto", False
                )
                pick = prompt_rng.integers(0, len(table.prompt_tokens), size=m)
                prompts[rows] = _cut(table.prompt_tokens[pick], cls.lengths.max_prompt)
                outputs[rows] = _cut(table.output_tokens[pick], cls.lengths.max_output)
            else:
                assert cls.prompt is not None and cls.output is not None
                p_key, o_key = _source_key(spec, i, "prompt"), _source_key(spec, i, "output")
                prompts[rows] = draw_lengths(cls.prompt, prompt_rng, m, base_dir, p_key)
                outputs[rows] = draw_lengths(cls.output, output_rng, m, base_dir, o_key)
    if spec.sessions is not None:
        turns = sessions.draw(spec.sessions, seed, times, prompts, outputs, spec.output, base_dir)
        return Arrivals.of_sessions(turns)
    if not spec.prefixes:
        return Arrivals(times, prompts, outputs, class_index, spec.class_names)
    prefix_id, prefix_tokens = _draw_prefixes(spec, seed, n)
    prompts = prompts + prefix_tokens
    if n and int(prompts.max()) > MAX_TOKENS:
        raise LlmsimError(
            f"a prompt with its prefix exceeds {MAX_TOKENS:,} tokens", key=f"{PREFIX}.prefixes"
        )
    return Arrivals(
        times, prompts, outputs, class_index, spec.class_names, prefix_id, prefix_tokens
    )


def _draw_prefixes(spec: WorkloadSpec, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each request's shared prefix: a group by share (or none, with what the shares
    leave), then one of the group's `count` prefixes uniformly. Its own stream, so the
    other draws are those of the same workload without prefixes."""
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(PREFIX_STREAM,)))
    groups = spec.prefixes
    edges = np.cumsum([g.share for g in groups])
    group = np.searchsorted(edges, rng.random(n), side="right")
    member = rng.random(n)
    first = np.concatenate([[0], np.cumsum([g.count for g in groups])])
    counts = np.array([g.count for g in groups] + [1])
    lengths = np.array([g.tokens for g in groups] + [0], dtype=np.int64)
    ids = first[np.minimum(group, len(groups))] + np.minimum(
        (member * counts[group]).astype(np.int64), counts[group] - 1
    )
    prefix_id = np.where(group < len(groups), ids, -1).astype(np.int32)
    return prefix_id, lengths[group]


def _source_key(spec: WorkloadSpec, i: int, field: str) -> str:
    if spec.classes and getattr(spec.classes[i], field) is not None:
        return f"{PREFIX}.classes.{i}.{field}"
    return f"{PREFIX}.{field}"


def _cut(values: np.ndarray, limit: int | None) -> np.ndarray:
    return values if limit is None else np.minimum(values, limit)


def _arrival_times(spec: WorkloadSpec, rng: np.random.Generator) -> np.ndarray:
    a, n, until = spec.arrival, spec.requests, spec.duration_s
    if isinstance(a, BurstArrivals):
        assert n is not None
        return np.zeros(n)
    if isinstance(a, ConstantArrivals):
        if n is None:
            assert until is not None
            _check_expected(until * a.rate)
            n = math.ceil(until * a.rate) + 1
            times = np.arange(n) / a.rate
            return times[: np.searchsorted(times, until, side="left")]
        return np.arange(n) / a.rate
    if isinstance(a, PoissonArrivals):
        return _renewal(lambda m: rng.exponential(1.0 / a.rate, m), a.rate, n, until)
    if isinstance(a, GammaArrivals):
        shape = 1.0 / a.cv**2  # Gamma(k, θ) has CV 1/√k and mean kθ = 1/rate
        return _renewal(lambda m: rng.gamma(shape, 1.0 / (a.rate * shape), m), a.rate, n, until)
    assert isinstance(a, OnOffArrivals)
    # A Poisson process in "on-time" (the clock that runs only while on), mapped onto
    # the wall clock by inserting an off period after each `on_s` of on-time.
    period = a.on_s + a.off_s
    on_until = None
    if until is not None:
        full, rest = divmod(until, period)
        on_until = full * a.on_s + min(rest, a.on_s)
    on_time = _renewal(lambda m: rng.exponential(1.0 / a.rate, m), a.rate, n, on_until)
    cycles, within = np.divmod(on_time, a.on_s)
    return cycles * period + within


def _check_expected(expected: float) -> None:
    if expected > MAX_REQUESTS:
        raise LlmsimError(
            f"about {expected:,.0f} requests expected; at most {MAX_REQUESTS:,} are supported",
            key=f"{PREFIX}.duration_s",
        )


def _renewal(draw: Any, rate: float, n: int | None, until: float | None) -> np.ndarray:
    """Arrival times 0, g1, g1+g2, ...: `n` of them, or all those before `until`."""
    if n is not None:
        times = np.zeros(n)
        np.cumsum(draw(n - 1), out=times[1:])
        return times
    assert until is not None
    expected = until * rate
    _check_expected(expected)
    # Chunks sized to overshoot with high probability, so one draw is the usual case.
    size = int(expected + 6 * math.sqrt(expected) + 64)
    chunks, last, total = [np.zeros(1)], 0.0, 1
    while last < until:
        chunk = last + np.cumsum(draw(size))
        chunks.append(chunk)
        last, total = float(chunk[-1]), total + size
        _check_expected(total)
    times = np.concatenate(chunks)
    return times[: np.searchsorted(times, until, side="left")]


def _is_session_trace(tr: TraceSpec, base_dir: Path | None) -> bool:
    if tr.format == "sessions":
        return True
    if tr.format != "auto":
        return False
    path = resolve_path(tr.path, base_dir, f"{PREFIX}.trace.path")
    return {"session_id", "turn"} <= set(_header(path))


def _replay_sessions(spec: WorkloadSpec, tr: TraceSpec, base_dir: Path | None) -> sessions.Turns:
    key = f"{PREFIX}.trace"
    for field in ("start_s", "max_prompt", "max_output"):
        if getattr(tr, field) != TraceSpec.model_fields[field].default:
            raise LlmsimError("not supported with a session trace", key=f"{key}.{field}")
    if spec.requests is not None or spec.duration_s is not None:
        raise LlmsimError("a session trace replays whole sessions; use trace.limit", key=key)
    path = resolve_path(tr.path, base_dir, f"{key}.path")
    turns = sessions.replay(path, tr.time_scale, tr.limit)
    if len(turns.turn) == 0:
        raise LlmsimError("no sessions in the trace", key=key)
    return turns


def _replay(
    spec: WorkloadSpec, tr: TraceSpec, base_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = load_table(resolve_path(tr.path, base_dir, f"{PREFIX}.trace.path"), tr.format, True)
    assert table.arrival_s is not None
    # Rows [first, stop) of the file are replayed.
    first = int(np.searchsorted(table.arrival_s, tr.start_s, side="left"))
    stop = len(table.arrival_s)
    if tr.limit is not None:
        stop = min(stop, first + tr.limit)
    times = (table.arrival_s[first:stop] - tr.start_s) / tr.time_scale
    if spec.duration_s is not None:
        times = times[: np.searchsorted(times, spec.duration_s, side="left")]
    if spec.requests is not None:
        if spec.requests > len(times):
            raise LlmsimError(
                f"{spec.requests} requested but the trace has {len(times)} "
                "after start_s, limit and duration_s",
                key=f"{PREFIX}.requests",
            )
        times = times[: spec.requests]
    if len(times) == 0:
        raise LlmsimError("no requests left after start_s/limit/duration_s", key=f"{PREFIX}.trace")
    stop = first + len(times)
    prompts = _cut(table.prompt_tokens[first:stop], tr.max_prompt).copy()
    outputs = _cut(table.output_tokens[first:stop], tr.max_output).copy()
    return times, prompts, outputs
