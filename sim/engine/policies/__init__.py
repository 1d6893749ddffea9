"""Batching policies, one module each (see `base` for the interface). Importing this
package registers them in `sim.registry.POLICIES`."""

from sim.engine.policies import orca, sarathi, static, vllm

__all__ = ["orca", "sarathi", "static", "vllm"]
