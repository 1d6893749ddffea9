"""What a user writes, validated once: scenarios, hardware, models, workloads, SLOs,
precisions, offload placements, and the catalogs that name them.

Specs are strict, frozen pydantic models (sim.spec.base): an unknown key is an error,
nothing changes after load, and every error names the file, the key path and what was
expected. Nothing here runs, prices or plans anything.
"""
