"""`simulate(scenario)`: plan, run and summarise one scenario, and the `Results` of it.

The composition of the layers below: the workload draws its requests, the plan turns
the scenario into a deployment, the engine runs it and returns records, and the
summary is computed from those records alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sim.engine.records import RunRecords
from sim.engine.run import run
from sim.errors import LlmsimError
from sim.plan.deploy import deploy
from sim.progress import Progress
from sim.results.frames import device_frame, link_frame
from sim.results.summary import Summary, summarize
from sim.spec.scenario import Scenario
from sim.workload.arrivals import generate

PROGRESS_MIN_REQUESTS = 2000  # smaller runs end before a bar is worth drawing


@dataclass
class Results:
    scenario: Scenario
    summary: Summary
    requests: pd.DataFrame
    iterations: pd.DataFrame
    devices: pd.DataFrame
    links: pd.DataFrame
    stages: pd.DataFrame
    wall_s: float
    events: int


def simulate(
    scenario: Scenario, *, progress: bool | None = False, records: bool | None = None
) -> Results:
    """Run one scenario to completion (or `engine.until_s`) and summarise it.

    `records=False` keeps no per-iteration rows (the summary does not need them), so a
    long run's memory holds only the per-request columns; the default follows the
    scenario's `output.records`. `progress=None` draws a bar on a terminal only."""
    try:
        arrivals = generate(scenario.workload, scenario.seed, scenario.base_dir)
    except LlmsimError as exc:
        raise exc.at(file=exc.file or scenario.file) from None
    deployment = deploy(scenario)
    bar = Progress(len(arrivals), "simulating", "req", progress, PROGRESS_MIN_REQUESTS)
    keep = scenario.output.records if records is None else records
    try:
        records_ = run(
            deployment, arrivals, on_progress=bar.update if bar.on else None, records=keep
        )
    finally:
        bar.close()
    return collect(records_)


def collect(run_: RunRecords) -> Results:
    """The frames and summary of a finished run."""
    requests = run_.requests_frame()
    devices = device_frame(run_)
    links = link_frame(run_)
    summary = summarize(run_, requests, devices, links)
    return Results(
        run_.deployment.scenario,
        summary,
        requests,
        run_.recorder.iterations_frame(),
        devices,
        links,
        run_.recorder.stages_frame(),
        run_.wall_s,
        run_.events,
    )
