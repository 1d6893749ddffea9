"""The simulation engine: SimPy processes for arrivals, replicas and transfers.

`sim.engine.run.run` owns the lifecycle of one run (wire the planned deployment →
`env.run` → collect records). A replica is a set of pipeline stages on TP groups, held
as SimPy resources (resources); virtual engines ask a batching policy (policies/) for
each iteration's work, price it with the stage costs and hold the stages and links for
that long; quiet decode stretches run as leaps (leap); disaggregated KV moves (disagg)
and offload streams (offload) hold the links they cross; records collects flat columns.
"""
