"""The base of every spec: strict, frozen pydantic models, and unit-parsing field types.

Specs are data. They are validated once at load, never mutated, and an unknown key is
an error. Quantities that YAML may write with a unit (`80 GB`, `2039 GB/s`, `5 us`,
`312 TFLOPS`) are parsed into base units (bytes, bytes/s, seconds, FLOP/s) here.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from sim import units


def _wrap(parse: Any) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value)
        return value

    return check


Bytes = Annotated[float, BeforeValidator(_wrap(units.parse_bytes))]
BytesPerS = Annotated[float, BeforeValidator(_wrap(units.parse_rate))]
Seconds = Annotated[float, BeforeValidator(_wrap(units.parse_seconds))]
FlopsPerS = Annotated[float, BeforeValidator(_wrap(units.parse_flops))]


class Spec(BaseModel):
    """Strict and frozen: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def __hash__(self) -> int:
        # Specs hold dicts (sources, peak_flops); hash their canonical JSON instead, so a
        # spec can key a cache (e.g. the per-layer op plan).
        return hash((type(self).__name__, self.model_dump_json()))
