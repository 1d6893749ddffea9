"""Sweeps: many variants of one scenario, run in parallel, one row each in a table.

A sweep file names a base scenario and the variants to run:

    name: tp-vs-replicas
    scenario: ../scenarios/llama-2-70b-chat-sla.yaml   # relative to this file
    task: capacity            # or run (the default)
    capacity: {target: 0.99, seeds: 3}                  # options of the search
    set: {cluster: dgx-h100-x2}                         # overrides every task shares
    grid:                                               # cartesian product
      parallel.tp:parallel.pp:parallel.replicas: [[8, 1, 2], [4, 1, 4], "2:2:4"]
      scheduler.policy: [vllm, sarathi]
    list:                                               # explicit override sets
      - {parallel.tp: 8, scheduler.policy: orca}
    output: results/sweeps/tp-vs-replicas.sqlite        # default results/sweeps/<name>.sqlite

A grid key `K1:K2` varies keys together (zipped): each value is a list with one item
per key, or a string `A1:A2` split the way `llmsim compare --vary` splits it. With both
`grid` and `list`, every list entry is combined with every grid point. A task applies
the shared `set` first, then its grid point, then its list entry (a key may appear in
only one of the three).

Each task is the base scenario with its overrides, simulated once (`run`) or searched
for its capacity (`capacity`, sim.studies.capacity). Its row carries its id (a hash of the
scenario path as written, the overrides, the task kind and the search options: change
any and it is a new task), the overrides, ok/error with the one-line error, the key
metrics, the resolved scenario as YAML and the wall seconds. For `run` tasks the
metrics are the run's summary (attainment and goodput over all its requests); for
`capacity` tasks they are the means over seeds at the capacity (sim.studies.capacity counts them
in the measurement window).

Rows are written to an SQLite table (stdlib sqlite3, table `tasks`) by this process
alone, each committed as soon as its task ends: a sweep that is stopped keeps every
finished row, and run again it skips the tasks already in the table (editing the base
scenario file does not change an id: give another output to run afresh). A task that
fails (bad override, a model that does not fit) is a row with status `error`; the
others run on. Relative `output` paths are taken from the working directory, as a
scenario's `output.dir` is.

Executors: a local process pool (`jobs` workers; 1 runs in this process), or Ray — a
local instance, or a cluster at `address` whose nodes have llmsim installed and the
sweep's files at the same paths. After the sweep, `ranked` orders the rows by capacity
(or goodput) and `pareto_front` keeps those no other row beats on both that metric and
cost per million output tokens; the CLI writes the front to `<table stem>.pareto.csv`,
with joules per output token beside the dollars (`run` tasks only: a capacity search
does not measure energy in its window, so its rows leave the column empty).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.progress import Progress
from sim.results.run import simulate
from sim.spec.scenario import Scenario
from sim.studies.capacity import capacity
from sim.studies.pool import Pool, check_jobs, default_jobs
from sim.studies.probes import CURVE_METRICS
from sim.studies.store import ResultsTable
from sim.studies.sweep_tasks import Sweep, SweepTask

EXECUTORS = ("local", "ray")
# ------------------------------------------------------------------------- tasks


def run_task(task: SweepTask) -> dict[str, Any]:
    """Run one task and return its row (module level: it runs in a worker). Bad input
    becomes an error row with its one line; so does an unexpected exception, named."""
    wall0 = time.perf_counter()
    row: dict[str, Any] = {
        "task_id": task.task_id,
        "seq": task.index,
        "sweep": task.sweep,
        "task": task.kind,
        "label": task.label,
        "overrides": json.dumps(dict(task.overrides)),
        "status": "ok",
    }
    try:
        scenario = load_scenario(task.scenario_path, task.assignments)
        row["scenario_yaml"] = yaml.safe_dump(scenario.resolved_dict(), sort_keys=False)
        if task.kind == "capacity":
            row.update(_capacity_metrics(scenario, dict(task.options)))
        else:
            row.update(_run_metrics(scenario))
    except LlmsimError as exc:
        row.update(status="error", error=exc.line())
    except Exception as exc:  # a bug, not bad input: keep the sweep going, say what
        row.update(status="error", error=f"internal error: {type(exc).__name__}: {exc}")
    row["wall_s"] = time.perf_counter() - wall0
    return row


def _run_metrics(scenario: Scenario) -> dict[str, Any]:
    s = simulate(scenario, records=False).summary
    return {
        "throughput_rps": s.throughput_rps,
        "goodput_rps": s.slo.goodput_rps,
        "attainment": s.slo.attainment,
        "output_tokens_per_s": s.output_tokens_per_s,
        "ttft_p50_s": s.ttft_s.p50,
        "ttft_p99_s": s.ttft_s.p99,
        "tpot_p50_s": s.tpot_s.p50,
        "tpot_p99_s": s.tpot_s.p99,
        "devices": s.cost.devices,
        "usd_per_hour": s.cost.usd_per_hour,
        "usd_per_million_output_tokens": s.cost.usd_per_million_output_tokens,
        "joules_per_output_token": s.energy.joules_per_output_token,
    }


def _capacity_metrics(scenario: Scenario, options: dict[str, Any]) -> dict[str, Any]:
    r = capacity(scenario, jobs=1, loads=(), **options)
    at = r.at_capacity
    metrics: dict[str, Any] = {
        "capacity_rps": r.capacity_rps,
        "capacity_lo_rps": r.interval_rps[0],
        "capacity_hi_rps": r.interval_rps[1],
        "capacity_converged": int(r.converged),
        "devices": r.devices,
        "usd_per_hour": r.usd_per_hour,
    }
    if at is not None:
        metrics["attainment"] = at.attainment
        for name in CURVE_METRICS:
            metrics[name] = at.mean(name)
    notes = [r.note, *r.warnings] if r.note else list(r.warnings)
    if notes:
        metrics["note"] = "; ".join(notes)  # why the answer may be short or shaky
    return metrics


# --------------------------------------------------------------------- executors


def _local(tasks: Sequence[SweepTask], jobs: int) -> Iterator[dict[str, Any]]:
    """Rows as tasks finish: in this process (jobs=1) or the study pool of `jobs`
    processes; stopped early, the tasks not yet started are cancelled."""
    with Pool(min(jobs, max(len(tasks), 1))) as pool:
        for _, row in pool.as_completed(run_task, tasks):
            yield row


def import_ray() -> Any:
    """The `ray` module, or the one-line error saying how to get it."""
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise LlmsimError(
            "the ray executor needs Ray: pip install 'llmsim[ray]'", key="--executor"
        ) from None


def _ray(
    tasks: Sequence[SweepTask], jobs: int | None, address: str | None
) -> Iterator[dict[str, Any]]:
    """Rows as tasks finish on Ray: a cluster at `address`, or a local instance with
    `jobs` CPUs. Workers must import `sim` (install llmsim on the cluster's nodes)."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR"}
        if address:
            kwargs["address"] = address
        elif jobs:
            kwargs["num_cpus"] = jobs
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise LlmsimError(f"cannot start or reach Ray: {exc}", key="--address") from None
        started = True
    remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
    pending = [remote.remote(t) for t in tasks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------- sweep


@dataclass
class SweepOutcome:
    """What a sweep did, and its rows (this sweep's tasks only, in sweep order)."""

    rows: pd.DataFrame
    ran: int
    skipped: int
    left: int  # tasks not run (a --limit)


def run_sweep(
    sweep: Sweep,
    *,
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    limit: int | None = None,
    retry_errors: bool = False,
    progress: bool | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepOutcome:
    """Run the tasks not yet in the table, writing each row as it finishes.

    `limit` runs at most that many of them now (the rest on a later call);
    `retry_errors` runs again the tasks whose rows say error; `on_row` sees each row
    after it is committed. `progress` draws a tqdm bar (default: on a terminal)."""
    if executor not in EXECUTORS:
        raise LlmsimError(
            f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}", key="--executor"
        )
    check_jobs(jobs)
    if limit is not None and limit < 0:
        raise LlmsimError(f"expected a number >= 0 (got {limit})", key="--limit")
    if address and executor != "ray":
        raise LlmsimError("--address is for --executor ray", key="--address")
    if executor == "ray":
        import_ray()  # fail before opening anything
    table = ResultsTable(sweep.table)
    try:
        done = table.done_ids(ok_only=retry_errors)
        pending = [t for t in sweep.tasks if t.task_id not in done]
        skipped = len(sweep.tasks) - len(pending)
        todo = pending if limit is None else pending[:limit]
        if executor == "ray":
            rows = _ray(todo, jobs, address)
        else:
            rows = _local(todo, jobs or default_jobs(len(todo)))
        bar = Progress(len(todo), sweep.spec.name, "task", progress)
        ran = 0
        try:
            for row in rows:
                table.write(row)
                ran += 1
                bar.advance()
                if on_row is not None:
                    on_row(row)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            bar.close()
        frame = table.frame([t.task_id for t in sweep.tasks])
    finally:
        table.close()
    return SweepOutcome(frame, ran, skipped, len(pending) - len(todo))
