"""How requests are batched and routed, as a user writes it: `scheduler:` names a
batching policy and gives its parameters (validated by the policy's own schema, found
through sim.registry); `router:` names the router that picks a replica."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from sim.registry import POLICIES, ROUTERS
from sim.spec.base import Bytes, Spec


class KVTiersSpec(Spec):
    """Tiered KV (sim.engine.prefix_cache): the bytes of evicted prefix-cache blocks
    each replica keeps in host DRAM and then on local disk (0: no such tier)."""

    host_bytes: Bytes = Field(alias="host", gt=0)
    disk_bytes: Bytes = Field(default=0.0, alias="disk", ge=0)


class CommonParams(Spec):
    """The parameters every batching policy has; a policy's `Params` extends them."""

    block_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = Field(default=None, gt=0)
    # Automatic prefix caching (sim.engine.prefix_cache): off by default so that a
    # scenario means what it meant before; vLLM V1 and SGLang turn it on by default.
    prefix_caching: bool = False
    # Tiered KV: evicted prefix blocks go to host DRAM, then disk, instead of being dropped.
    kv_tiers: KVTiersSpec | None = None

    def step_token_cap(self, max_model_len: int) -> int:
        """The most tokens one step carries: `max_num_batched_tokens` (default
        max(max_model_len, 2048)), or a chunked-prefill token budget below it."""
        cap: int = getattr(self, "max_num_batched_tokens", None) or max(max_model_len, 2048)
        return min(cap, getattr(self, "token_budget", cap))


class SchedulerSpec(Spec):
    """`policy` picks a batching policy from the registry; the other keys are that
    policy's parameters, validated by the policy's own schema."""

    policy: str = "vllm"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "params" not in data:
            rest = {k: v for k, v in data.items() if k != "policy"}
            return {"policy": data.get("policy", "vllm"), "params": rest}
        return data

    @model_validator(mode="after")
    def _validate_params(self) -> SchedulerSpec:
        POLICIES.check(self.policy)
        params = POLICIES[self.policy].Params.model_validate(self.params)
        object.__setattr__(self, "params", params.model_dump(by_alias=True))
        return self

    def policy_params(self) -> Any:
        """The policy's own parameters, validated by its schema (defaults filled in)."""
        return POLICIES[self.policy].Params.model_validate(self.params)


def _known_router(value: str) -> str:
    return ROUTERS.check(value)


class RouterSpec(Spec):
    policy: str = "round-robin"

    @field_validator("policy")
    @classmethod
    def _known(cls, value: str) -> str:
        return _known_router(value)
