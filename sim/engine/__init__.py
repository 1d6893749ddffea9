"""The simulation engine: SimPy processes for arrivals, replicas and transfers.

`sim.engine.run.simulate` owns the lifecycle (build → wire → run → collect). A replica
is a set of pipeline stages on TP groups; a batching policy decides each iteration's
work; the cost kernel prices it; records are collected as flat columns.
"""
