"""llmsim: a discrete-event simulator of LLM inference clusters.

Everything the CLI does is a Python call returning plain objects and DataFrames:

    import sim
    scenario = sim.load_scenario("scenarios/quickstart.yaml", ["workload.arrival.rate=8"])
    results = sim.simulate(scenario)          # .summary, .requests, .iterations, ...
    sim.plan.analyze("llama-2-70b", "h100-sxm", tp=4, batch=16).to_dict()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["analyze", "load_model", "load_scenario", "simulate"]

if TYPE_CHECKING:
    from sim.plan import load_scenario
    from sim.plan.analyze import analyze
    from sim.results.run import simulate
    from sim.spec.catalog import load_model


def __getattr__(name: str) -> Any:
    # Imported on first use: `llmsim catalog` should not pay for pandas and SimPy.
    if name == "analyze":
        from sim.plan.analyze import analyze

        return analyze
    if name == "load_model":
        from sim.spec.catalog import load_model

        return load_model
    if name == "simulate":
        from sim.results.run import simulate

        return simulate
    if name == "load_scenario":
        from sim.plan import load_scenario

        return load_scenario
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
