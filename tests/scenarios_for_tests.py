"""Building test scenarios from a base mapping: `make(BASE, a__b=value)` sets a.b."""

from __future__ import annotations

import copy
from typing import Any

from sim.plan import load_scenario
from sim.spec.scenario import Scenario


def make(base: dict[str, Any], **changes: Any) -> Scenario:
    data = copy.deepcopy(base)
    for path, value in changes.items():
        node = data
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return load_scenario(data)
