"""Multi-turn sessions: the turns of conversations whose next turn arrives a think time
after the previous answer finished, carrying the whole history as its prompt.

What it models
  * A session's turn k has the prompt of turn k - 1, its output and a new user message
    (turn 0's prompt is its first message): prompt lengths are fixed when the workload
    is drawn, arrival times are not. Only each session's start is an arrival time here;
    the engine (sim.engine.run) releases turn k + 1 at turn k's finish (or rejection)
    plus its think time, so the loop is closed.
  * A session's history is a shared prefix whose id is the session id and whose length
    is the turn's whole prompt (sim.engine.prefix_cache): with prefix caching, turn
    k + 1 finds the full blocks of turn k's prompt; the previous answer and the new
    message are computed again (vLLM would also keep the answer's blocks).
  * Synthetic sessions draw their turn counts, follow-up messages, follow-up outputs
    and think times from their own seed streams, so the session starts, first prompts
    and first outputs are those of the same workload without sessions.

Session traces are CSVs with columns session_id, turn, arrival_s, think_s,
message_tokens, output_tokens: arrival_s is read on turn 0 (the session's start),
think_s on later turns; turns of a session are consecutive rows numbered 0, 1, 2, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import LlmsimError
from sim.spec.workload import MAX_TOKENS, PREFIX, SessionSpec, UniformThink
from sim.workload.lengths import draw_lengths

SESSION_STREAM = 3000  # spawn key of the session draws (prefixes 2000, routers 1000)
SESSION_COLUMNS = ("session_id", "turn", "arrival_s", "think_s", "message_tokens", "output_tokens")


@dataclass(frozen=True, eq=False)
class Turns:
    """Every turn, session by session (sessions in order of start), turns in order."""

    start_s: np.ndarray  # the session's start, on each of its turns
    session_id: np.ndarray  # int32
    turn: np.ndarray  # int32
    think_s: np.ndarray  # before this turn, after the previous one finished (0 on turn 0)
    prompt_tokens: np.ndarray  # int64: the history plus the new message
    output_tokens: np.ndarray  # int64


def build(
    start_s: np.ndarray,
    counts: np.ndarray,
    think_s: np.ndarray,
    message: np.ndarray,
    output: np.ndarray,
    where: str,
) -> Turns:
    """Turns from each session's start and turn count and each turn's think time,
    message and output (turn-major arrays of length counts.sum())."""
    n = len(counts)
    session = np.repeat(np.arange(n, dtype=np.int32), counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    turn = (np.arange(len(session)) - np.repeat(first, counts)).astype(np.int32)
    total = message.astype(np.int64) + output
    cs = np.cumsum(total)
    before = np.repeat(cs[first] - total[first], counts) if n else cs
    prompt = cs - before - output
    if len(prompt) and int(prompt.max()) > MAX_TOKENS:
        raise LlmsimError(f"a session's history exceeds {MAX_TOKENS:,} tokens", key=where)
    think = np.where(turn == 0, 0.0, think_s)
    return Turns(np.repeat(start_s, counts), session, turn, think, prompt, output)


def draw(
    spec: SessionSpec,
    seed: int,
    start_s: np.ndarray,
    first_prompt: np.ndarray,
    first_output: np.ndarray,
    output_dist: object,
    base_dir: Path | None,
) -> Turns:
    """Sessions starting at `start_s` with their first turn's prompt and output drawn
    as the workload's requests are; the rest from the session streams."""
    turns_ss, message_ss, output_ss, think_ss = np.random.SeedSequence(
        int(seed), spawn_key=(SESSION_STREAM,)
    ).spawn(4)
    key = f"{PREFIX}.sessions"
    n = len(start_s)
    counts = draw_lengths(spec.turns, np.random.default_rng(turns_ss), n, base_dir, key + ".turns")
    total = int(counts.sum())
    is_first = np.zeros(total, dtype=bool)
    is_first[np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)] = n > 0
    rest = total - n
    message = np.empty(total, dtype=np.int64)
    output = np.empty(total, dtype=np.int64)
    message[is_first], output[is_first] = first_prompt, first_output
    m_rng, o_rng = np.random.default_rng(message_ss), np.random.default_rng(output_ss)
    message[~is_first] = draw_lengths(spec.message, m_rng, rest, base_dir, key + ".message")
    output[~is_first] = draw_lengths(output_dist, o_rng, rest, base_dir, f"{PREFIX}.output")
    t_rng, think = np.random.default_rng(think_ss), spec.think_time
    if isinstance(think, float | int):
        think_s = np.full(total, float(think))
    elif isinstance(think, UniformThink):
        think_s = t_rng.uniform(think.min, think.max, total)
    else:
        think_s = t_rng.exponential(think.mean, total)
    return build(start_s, counts, think_s, message, output, key)


def load(path: Path) -> pd.DataFrame:
    """A session trace's rows (see the module docstring), checked: a bad row is one
    error naming the file, its line and its column."""
    from sim.workload import traces

    header = traces._header(path)
    missing = [c for c in SESSION_COLUMNS if c not in header]
    if missing:
        raise LlmsimError(
            f"a session trace needs columns {','.join(SESSION_COLUMNS)}; "
            f"missing {','.join(missing)}",
            file=str(path),
        )
    frame = traces._read(path, list(SESSION_COLUMNS))
    failures: list[tuple[int, int, str, str]] = []
    checks: dict[str, tuple[np.ndarray, int | None, str]] = {}
    for column in ("message_tokens", "output_tokens"):
        checks[column] = traces._check_tokens(frame[column])
    sid = pd.to_numeric(frame["session_id"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    turn = pd.to_numeric(frame["turn"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        for column, values in (("session_id", sid), ("turn", turn)):
            bad = ~np.isfinite(values) | (values < 0) | (values != np.floor(values))
            if bad.any():
                at = int(np.argmax(bad))
                msg = traces._describe(frame[column].iloc[at], "an integer >= 0")
                checks[column] = (values, at, msg)
    for column, (_, bad_row, msg) in checks.items():
        if bad_row is not None:
            failures.append((bad_row, header.index(column), column, msg))
    if not failures:
        # turns of a session: consecutive rows numbered 0, 1, 2, ...
        new = np.concatenate([[True], sid[1:] != sid[:-1]]) if len(sid) else sid.astype(bool)
        expected = np.zeros(len(turn))
        if len(turn):
            expected[1:] = np.where(new[1:], 0, turn[:-1] + 1)
        bad = turn != expected
        if bad.any():
            row = int(np.argmax(bad))
            want = "turn 0 (a new session)" if new[row] else f"turn {int(expected[row])}"
            msg = f"expected {want}, got {int(turn[row])}"
            failures.append((row, header.index("turn"), "turn", msg))
        seen = sid[new]
        dup = pd.Index(seen).duplicated()
        if dup.any():
            row = int(np.flatnonzero(new)[int(np.argmax(dup))])
            msg = f"session {int(sid[row])} appears again after other sessions"
            failures.append((row, header.index("session_id"), "session_id", msg))
        for column, on_first in (("arrival_s", True), ("think_s", False)):
            rows = new if on_first else ~new
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(
                np.float64, na_value=np.nan
            )
            with np.errstate(invalid="ignore"):
                bad = rows & (~np.isfinite(values) | (values < 0))
            if bad.any():
                row = int(np.argmax(bad))
                msg = traces._describe(frame[column].iloc[row], "a number of seconds >= 0")
                failures.append((row, header.index(column), column, msg))
    if failures:
        row, _, column, message = min(failures)
        raise traces._row_error(path, row, column, message)
    return frame


def replay(path: Path, time_scale: float, limit: int | None) -> Turns:
    """A session trace's turns, sessions ordered by start (ties by file order);
    `time_scale` divides start times and think times, `limit` caps the sessions."""
    frame = load(path)
    sid = frame["session_id"].to_numpy(np.int64)
    new = np.concatenate([[True], sid[1:] != sid[:-1]]) if len(sid) else np.zeros(0, bool)
    counts = np.diff(np.append(np.flatnonzero(new), len(sid)))
    starts = pd.to_numeric(frame["arrival_s"], errors="coerce").to_numpy(np.float64)[new]
    order = np.argsort(starts, kind="stable")
    if limit is not None:
        order = order[:limit]
    firsts = np.flatnonzero(new)
    rows = np.concatenate([np.arange(firsts[s], firsts[s] + counts[s]) for s in order])
    think = pd.to_numeric(frame["think_s"], errors="coerce").to_numpy(np.float64)[rows]
    message = frame["message_tokens"].to_numpy(np.int64)[rows]
    output = frame["output_tokens"].to_numpy(np.int64)[rows]
    start = starts[order] / time_scale
    return build(
        start, counts[order], np.nan_to_num(think) / time_scale, message, output, f"{PREFIX}.trace"
    )
