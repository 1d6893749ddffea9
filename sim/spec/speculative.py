"""Speculative decoding as a user writes it: how tokens are proposed (`method`: a draft
model, EAGLE or MTP heads, n-gram lookup), how many a step proposes (`k`) and how often
each is accepted.

`acceptance` is the conditional acceptance rate per position: a_i is the chance that
the i-th proposed token is accepted given that every one before it was. One number is
the same rate at every position (Leviathan et al. 2023's α: the chance that the first i
are all accepted, α^i, decays with position); a list gives the k rates one by one, as a
measured table does (EAGLE, Li et al. 2024, reports them per position). A verification
step then yields E = 1 + Σ_{i=1..k} Π_{j≤i} a_j tokens in expectation (the bonus token
included): `expected_tokens`. How the proposal and the verification are priced is the
method's (sim.plan.speculative, found through sim.registry).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, field_validator, model_validator

from sim.registry import SPECULATORS
from sim.spec.base import Spec
from sim.spec.model import ModelSpec


class SpeculativeSpec(Spec):
    """`method` proposes `k` tokens a step; `acceptance` rates say how many survive."""

    method: str = Field(description="how tokens are proposed: draft, eagle, mtp or ngram")
    k: int = Field(default=4, gt=0, le=16, description="tokens proposed per decode step")
    acceptance: tuple[float, ...] = Field(
        description="conditional acceptance rate per position: one rate for all k, or k "
        "rates (one rate is written out k times)"
    )
    draft_model: ModelSpec | None = Field(
        default=None, description="method draft: the draft model (a catalog name or mapping)"
    )

    @field_validator("method")
    @classmethod
    def _known(cls, value: str) -> str:
        return SPECULATORS.check(value)

    @model_validator(mode="before")
    @classmethod
    def _one_rate(cls, data: Any) -> Any:
        """One rate stands for the same rate at each of the k positions."""
        if isinstance(data, dict) and isinstance(data.get("acceptance"), int | float):
            k = data.get("k", cls.model_fields["k"].default)
            if isinstance(k, int) and not isinstance(k, bool) and 0 < k <= 16:
                return {**data, "acceptance": [data["acceptance"]] * k}
        return data

    @field_validator("acceptance")
    @classmethod
    def _rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not (0.0 <= a <= 1.0) or math.isnan(a) for a in value):
            raise ValueError("acceptance rates must lie in [0, 1]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeSpec:
        if len(self.acceptance) != self.k:
            raise ValueError(
                f"acceptance lists {len(self.acceptance)} rates but k={self.k}: give one "
                "rate per proposed position"
            )
        if (self.method == "draft") != (self.draft_model is not None):
            need = "needs" if self.method == "draft" else "takes no"
            raise ValueError(f"method {self.method} {need} draft_model")
        return self

    @property
    def rates(self) -> tuple[float, ...]:
        """The k conditional acceptance rates, position by position."""
        return self.acceptance

    @property
    def expected_tokens(self) -> float:
        """Tokens one verification step yields on average: the accepted prefix of the
        proposal plus the bonus token, 1 + Σ_i Π_{j≤i} a_j (between 1 and k + 1)."""
        total, run = 1.0, 1.0
        for a in self.rates:
            run *= a
            total += run
        return total
