"""llmsim: a discrete-event simulator of LLM inference clusters.

Everything the command line does is a Python call returning plain objects and pandas
DataFrames:

    import sim
    scenario = sim.load_scenario("scenarios/quickstart.yaml", ["workload.arrival.rate=8"])
    results = sim.simulate(scenario)      # .summary (typed), .requests, .iterations, ...
    results.summary.ttft_s.p99
    sim.analyze("llama-2-70b", "h100-sxm", tp=4, batch=16).to_dict()

The API (imported on first use, so `import sim` stays light):

    load_scenario(source, overrides=())  -> Scenario    read, resolve, validate, check
    simulate(scenario, progress=, records=) -> Results  plan, run and summarise one run
    deploy(scenario)                     -> Deployment  what runs where, without running
    analyze(model, hardware, tp=, ...)   -> Analysis    the closed forms, no simulation
    load_model(name)                     -> ModelSpec   catalog name, HF id or config.json
    capacity(scenario, target=, ...)     -> CapacityResult   highest rate meeting the SLOs
    run_variants(source, variants, ...)  -> [VariantResult]  `llmsim compare`
    validate(data=None, only=None)       -> Report      simulated vs published figures

The layers beneath (docs/architecture.md): sim.spec, sim.arith, sim.cost,
sim.workload, sim.plan, sim.engine, sim.results, sim.studies, sim.fidelity, sim.cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    "load_scenario": "sim.plan",
    "simulate": "sim.results.run",
    "deploy": "sim.plan.deploy",
    "analyze": "sim.plan.analyze",
    "load_model": "sim.spec.catalog",
    "capacity": "sim.studies.capacity",
    "run_variants": "sim.studies.compare",
    "validate": "sim.fidelity.validate",
}
__all__ = [
    "analyze",
    "capacity",
    "deploy",
    "load_model",
    "load_scenario",
    "run_variants",
    "simulate",
    "validate",
]

if TYPE_CHECKING:
    from sim.fidelity.validate import validate
    from sim.plan import load_scenario
    from sim.plan.analyze import analyze
    from sim.plan.deploy import deploy
    from sim.results.run import simulate
    from sim.spec.catalog import load_model
    from sim.studies.capacity import capacity
    from sim.studies.compare import run_variants


def __getattr__(name: str) -> Any:
    # PEP 562: the API loads its layer on first use (`llmsim catalog` should not pay
    # for pandas, SimPy and scipy).
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
