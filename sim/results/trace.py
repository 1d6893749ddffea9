"""A run's timeline as a Chrome / Perfetto trace (the Trace Event Format, JSON).

Each replica is a process ("replica N") and each of its pipeline stages a thread
("stage S"); every stage execution (one micro-batch on one stage) is a complete ("X")
event named by its phase, with its engine, micro-batch and token count as arguments.
Each finished request adds a nested async span on its replica — `request` from
arrival to finish, split into `ttft` (arrival to first token) and `decode` — and each
rejected request an instant event. Times are microseconds of simulated time. The
events are sorted by timestamp (metadata first), so the file streams into
chrome://tracing and ui.perfetto.dev as written.

The trace needs the stage timeline, which `simulate` keeps only with records on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.results.run import Results

US = 1e6  # trace timestamps are microseconds


def _us(seconds: float) -> float:
    return round(seconds * US, 3)


def _stage_events(results: Results) -> list[dict[str, Any]]:
    st = results.stages
    if len(st) == 0:
        return []
    cols = zip(
        st["replica"].tolist(),
        st["stage"].tolist(),
        st["phase"].astype(str).tolist(),
        st["start_s"].tolist(),
        st["end_s"].tolist(),
        st["engine"].tolist(),
        st["microbatch"].tolist(),
        st["tokens"].tolist(),
        strict=True,
    )
    return [
        {
            "name": phase,
            "cat": "stage",
            "ph": "X",
            "pid": replica,
            "tid": stage,
            "ts": _us(start),
            "dur": _us(end - start),
            "args": {"engine": engine, "microbatch": micro, "tokens": tokens},
        }
        for replica, stage, phase, start, end, engine, micro, tokens in cols
    ]


def _request_events(results: Results) -> list[dict[str, Any]]:
    rq = results.requests
    if len(rq) == 0:
        return []
    out: list[dict[str, Any]] = []
    cols = zip(
        rq["request"].tolist(),
        rq["replica"].tolist(),
        rq["status"].tolist(),
        rq["arrival_s"].tolist(),
        rq["first_token_s"].tolist(),
        rq["finish_s"].tolist(),
        rq["prompt_tokens"].tolist(),
        rq["output_tokens"].tolist(),
        rq["reject_reason"].tolist(),
        strict=True,
    )
    for req, replica, status, arrival, first, finish, prompt, output, reason in cols:
        pid = max(int(replica), 0)
        if status == "rejected":
            out.append(
                {
                    "name": "rejected",
                    "cat": "request",
                    "ph": "i",
                    "s": "p",
                    "pid": pid,
                    "tid": 0,
                    "ts": _us(arrival),
                    "args": {"request": req, "reason": reason},
                }
            )
            continue
        if status != "finished" or not (math.isfinite(first) and math.isfinite(finish)):
            continue
        common = {"cat": "request", "id": req, "pid": pid, "tid": 0}
        args = {"request": req, "prompt_tokens": prompt, "output_tokens": output}
        out += [
            {**common, "name": "request", "ph": "b", "ts": _us(arrival), "args": args},
            {**common, "name": "ttft", "ph": "b", "ts": _us(arrival)},
            {**common, "name": "ttft", "ph": "e", "ts": _us(first)},
            {**common, "name": "decode", "ph": "b", "ts": _us(first)},
            {**common, "name": "decode", "ph": "e", "ts": _us(finish)},
            {**common, "name": "request", "ph": "e", "ts": _us(finish)},
        ]
    return out


def _metadata(threads: dict[int, set[int]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r, stages in sorted(threads.items()):
        meta = {"ph": "M", "pid": r, "tid": 0, "ts": 0}
        out.append({**meta, "name": "process_name", "args": {"name": f"replica {r}"}})
        out.append({**meta, "name": "process_sort_index", "args": {"sort_index": r}})
        for s in sorted(stages):
            out.append({**meta, "tid": s, "name": "thread_name", "args": {"name": f"stage {s}"}})
            out.append({**meta, "tid": s, "name": "thread_sort_index", "args": {"sort_index": s}})
    return out


def _threads(results: Results) -> dict[int, set[int]]:
    """Replica → its stages: the configured ones, and any the records name."""
    par = results.scenario.parallel
    threads = {r: set(range(par.pp)) for r in range(par.replicas)}
    st = results.stages
    if len(st):
        pairs = st[["replica", "stage"]].drop_duplicates().itertuples(index=False)
        for r, s in pairs:
            threads.setdefault(int(r), set()).add(int(s))
    rq = results.requests
    if len(rq):
        for r in rq["replica"].unique().tolist():
            threads.setdefault(max(int(r), 0), {0})
    return threads


def chrome_trace(results: Results) -> dict[str, Any]:
    """The run as a Trace Event Format object: `{"traceEvents": [...], ...}`."""
    scenario = results.scenario
    events = _stage_events(results) + _request_events(results)
    # a stable sort: a request's begin stays before its end when both share a time
    events.sort(key=lambda e: e["ts"])
    return {
        "traceEvents": _metadata(_threads(results)) + events,
        "displayTimeUnit": "ms",
        "otherData": {
            "scenario": scenario.name,
            "seed": scenario.seed,
            "time": "simulated; ts and dur in microseconds",
        },
    }


def write_trace(results: Results, path: str | Path) -> Path:
    """Write `chrome_trace(results)` as compact JSON; returns the path."""
    out = Path(path)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        json.dump(chrome_trace(results), f, separators=(",", ":"))
    return out
