"""Scenario -> Deployment: what runs where, decided before the clock starts.

Pure: no SimPy, no I/O beyond the catalogs. `load_scenario` reads a scenario and checks
that it can be deployed; `deploy` turns it into a `Deployment` (replicas, their stages
on devices, the routes between them, the memory budget of each device, the cost kernel
of each stage), which the engine wires into SimPy processes and resources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.plan.check import check_scenario
from sim.spec.scenario import Scenario, read_scenario

__all__ = ["check_scenario", "load_scenario"]


def load_scenario(
    source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> Scenario:
    """Read, override, resolve and validate a scenario (a path or a raw mapping), and
    check that its deployment can be built."""
    scenario = read_scenario(source, overrides)
    check_scenario(scenario)
    return scenario
