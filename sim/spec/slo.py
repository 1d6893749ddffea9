"""Service-level objectives: per request class, a bound on TTFT, TPOT and end-to-end
latency, each judged at a percentile over the class's requests.

A request *meets* its SLOs when each of its own latencies is within the bound; the
class *attains* them when the given percentile of each latency is within the bound.
"""

from __future__ import annotations

from pydantic import Field

from sim.spec.base import Seconds, Spec


class SLOSpec(Spec):
    ttft_s: Seconds | None = Field(default=None, alias="ttft", gt=0)
    tpot_s: Seconds | None = Field(default=None, alias="tpot", gt=0)
    e2e_s: Seconds | None = Field(default=None, alias="e2e", gt=0)
    percentile: float = Field(default=99.0, gt=0, le=100)

    @property
    def empty(self) -> bool:
        return self.ttft_s is None and self.tpot_s is None and self.e2e_s is None
