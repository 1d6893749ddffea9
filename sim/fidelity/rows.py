"""The records of the fidelity suite (one `Row` per compared figure, a `Report` of
them) and what every source family's handler shares: reading an entry's fields, naming
its model, device and machine, and simulating a scenario built from it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sim.plan import load_scenario
from sim.results.run import simulate
from sim.results.summary import Summary
from sim.spec import catalog
from sim.units import DTYPE_BYTES

OK = "ok"
NOT_REPRODUCIBLE = "not reproducible"
SKIPPED = "skipped"

NODE_OF_DEVICE = {
    "a100-80gb-sxm": "dgx-a100",
    "a100-40gb": "dgx-a100-40gb",
    "h100-sxm": "dgx-h100",
    "h200": "hgx-h200",
    "rtx-4090": "rtx-4090-single",
    "rtx-pro-6000-server": "rtx-pro-6000-server-2x",
}

# Hardware ids of the measurements that name no catalog device. Where the form factor is
# not stated, the SXM server part is assumed (the entries' notes say "not stated").
DEVICE_OF_HARDWARE = {
    "nvidia_a100_80gb": "a100-80gb-sxm",
    "nvidia_h100": "h100-sxm",
}


@dataclass(frozen=True)
class Row:
    """One compared figure. `simulated` is None when it could not be reproduced; the
    note then says why (status `not reproducible`) or what was wrong with the entry
    (status `skipped`)."""

    id: str
    metric: str
    measured: float | None
    simulated: float | None
    unit: str
    note: str
    status: str = OK
    group: str = ""  # the entry's group in the measurements (P1_serving_load, ...)
    runtime: str = ""  # the runtime the setup ran under

    @property
    def error_pct(self) -> float | None:
        """(simulated − measured) / measured, in percent."""
        if self.simulated is None or self.measured is None or self.measured == 0:
            return None
        return (self.simulated - self.measured) / self.measured * 100.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_pct": self.error_pct}


@dataclass(frozen=True)
class FidelitySummary:
    n: int  # rows
    n_numeric: int  # rows with a simulated number
    n_not_reproducible: int
    n_skipped: int
    median_abs_error_pct: float | None
    p90_abs_error_pct: float | None


@dataclass(frozen=True)
class Report:
    data: str
    rows: list[Row]
    summary: FidelitySummary
    wall_s: float

    @property
    def groups(self) -> dict[str, FidelitySummary]:
        """The summary of each group's rows, groups in name order."""
        names = sorted({r.group for r in self.rows})
        return {g: summarize([r for r in self.rows if r.group == g]) for g in names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "rows": [r.to_dict() for r in self.rows],
            **asdict(self.summary),
            "groups": {g: asdict(s) for g, s in self.groups.items()},
            "wall_s": self.wall_s,
        }


def summarize(rows: list[Row]) -> FidelitySummary:
    errors = np.array([abs(e) for r in rows if (e := r.error_pct) is not None], dtype=float)
    return FidelitySummary(
        n=len(rows),
        n_numeric=int(errors.size),
        n_not_reproducible=sum(r.status == NOT_REPRODUCIBLE for r in rows),
        n_skipped=sum(r.status == SKIPPED for r in rows),
        median_abs_error_pct=float(np.median(errors)) if errors.size else None,
        p90_abs_error_pct=float(np.percentile(errors, 90)) if errors.size else None,
    )


@dataclass(frozen=True)
class Options:
    max_requests: int | None = None
    # Capacity searches (DistServe's goodput) with one seed and a 5% bisection: a
    # rougher, several times cheaper check (`llmsim validate --quick`, the test suite).
    quick: bool = False
    # Settings laid over catalog runtimes (runtime name -> fields), for the fit of the
    # runtimes' free parameters (bench/fit_runtimes.py); empty in `llmsim validate`.
    runtimes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def runtime(self, name: str) -> str | dict[str, Any]:
        """A scenario's `runtime:` for the catalog runtime `name`, with any override."""
        patch = self.runtimes.get(name)
        return {"base": name, **patch} if patch else name


class EntryError(Exception):
    """The entry lacks something its setup needs (the row is skipped, with the reason)."""


def need(entry: dict[str, Any], path: str) -> Any:
    node: Any = entry
    for key in path.split("."):
        if not isinstance(node, dict) or node.get(key) is None:
            raise EntryError(f"entry has no {path}")
        node = node[key]
    return node


def number(value: Any, what: str = "value") -> float:
    """A number, allowing the transcriptions' `15.7K` style."""
    if isinstance(value, bool):
        raise EntryError(f"{what} is not a number: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().replace(",", "")
    scale = {"K": 1e3, "M": 1e6}.get(text[-1:].upper(), 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise EntryError(f"{what} is not a number: {value!r}") from None


def dtype_in(text: str) -> str:
    found = re.search(r"\b(fp32|bf16|fp16|fp8|int8|int4)\b", text.lower())
    if not found or found.group(1) not in DTYPE_BYTES:
        raise EntryError(f"no dtype in {text!r}")
    return found.group(1)


def model_name(entry: dict[str, Any]) -> str:
    raw = re.sub(r"\s*\(.*\)\s*$", "", str(need(entry, "model"))).strip()
    return catalog.load_model(raw).name


def device_name(hardware: str) -> str:
    """The catalog device an entry's `hardware` names: its first word (`h100-sxm (...)`,
    `nvidia_h200_sxm 141GB`), else the text before any parenthesis with a trailing
    memory size dropped (`RTX PRO 6000 Blackwell 96GB (...)`)."""
    name = re.split(r"[\s(]", hardware.strip(), maxsplit=1)[0]
    if name in DEVICE_OF_HARDWARE:
        return DEVICE_OF_HARDWARE[name]
    try:
        return catalog.load_device(name).name
    except catalog.NotInCatalog:
        long_name = re.sub(r"\s+\d+\s*GB\b.*$", "", hardware.split("(")[0].strip())
        if long_name == name:
            raise
        return catalog.load_device(long_name).name


def cluster_of(device: str) -> str:
    if device not in NODE_OF_DEVICE:
        raise EntryError(f"no single-node cluster in the suite for device {device}")
    return NODE_OF_DEVICE[device]


def fixed_workload(requests: int, prompt: int, output: int) -> dict[str, Any]:
    return {
        "requests": requests,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": prompt},
        "output": {"dist": "fixed", "value": output},
    }


def simulate_summary(scenario: dict[str, Any]) -> Summary:
    return simulate(load_scenario(scenario), records=False).summary


def unpriced_row(entry: dict[str, Any], reason: str, status: str) -> Row:
    """A row for an entry the suite measured but does not price (no simulated value)."""
    measured = entry.get("value")
    number = float(measured) if isinstance(measured, int | float) else None
    unit = str(entry.get("unit", "") or "")
    return Row(entry["id"], str(entry.get("metric", "")), number, None, unit, reason, status)
