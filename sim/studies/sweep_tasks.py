"""A sweep file read and expanded into its tasks (see sim.studies.sweep for the file's
form): each task the base scenario's path, its overrides in the order applied, and an id
that hashes them, so a rerun recognises the tasks already in the table."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from sim.errors import LlmsimError
from sim.spec import yamlio
from sim.spec.base import Spec, validation_error
from sim.studies.variants import VaryAxis, expand, split_top_level

Pairs = tuple[tuple[str, Any], ...]  # (key, value) overrides, in the order applied


class CapacityOptions(Spec):
    """The options of sim.studies.capacity.capacity a `task: capacity` sweep passes on."""

    target: float = Field(default=0.99, gt=0, le=1)
    seeds: int = Field(default=3, ge=1)
    warmup: float = Field(default=0.1, ge=0, lt=1)
    drain: float = Field(default=0.1, ge=0, lt=1)
    tolerance: float = Field(default=0.02, gt=0)
    max_probes: int = Field(default=40, ge=2)

    @model_validator(mode="after")
    def _window(self) -> CapacityOptions:
        if self.warmup + self.drain >= 1:
            raise ValueError("warmup + drain must be < 1")
        return self


class SweepSpec(Spec):
    """A sweep file (see the module docstring)."""

    model_config = ConfigDict(populate_by_name=False)

    name: str = Field(min_length=1)
    description: str = ""
    scenario: str = Field(min_length=1)
    task: Literal["run", "capacity"] = "run"
    capacity: CapacityOptions | None = None
    common: dict[str, Any] = Field(default_factory=dict, alias="set")
    grid: dict[str, tuple[Any, ...]] = Field(default_factory=dict)
    entries: tuple[dict[str, Any], ...] = Field(default=(), alias="list")
    output: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.capacity is not None and self.task != "capacity":
            raise ValueError("capacity options need task: capacity")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid {key}: give at least one value")
        return self

    @property
    def options(self) -> CapacityOptions:
        return self.capacity or CapacityOptions()


@dataclass(frozen=True)
class SweepTask:
    """One task: everything a worker needs to run it (it pickles)."""

    index: int  # 1-based position in the sweep
    task_id: str
    sweep: str
    kind: str  # run | capacity
    scenario_path: str
    overrides: Pairs  # the task's own, in order
    common: Pairs  # the sweep's `set`
    options: Pairs  # capacity options

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_label(v)}" for k, v in self.overrides) or "base"

    @property
    def assignments(self) -> list[str]:
        """`key=value` strings for load_scenario: shared first, then the task's."""
        return [f"{k}={_text(v)}" for k, v in (*self.common, *self.overrides)]


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: its spec, its tasks and its table."""

    spec: SweepSpec
    table: Path
    tasks: tuple[SweepTask, ...]

    @property
    def metric(self) -> str:
        """What the sweep ranks by: capacity, else goodput."""
        return "capacity_rps" if self.spec.task == "capacity" else "goodput_rps"


def _text(value: Any) -> str:
    """A value as YAML text that reads back as itself (JSON is YAML)."""
    return json.dumps(value, sort_keys=True)


def _label(value: Any) -> str:
    """A value as a reader writes it: YAML flow style, keys in the order given."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1 << 20)
    text = text.strip().removesuffix("...").strip()
    return text if yaml.safe_load(text) == value else _text(value)


def task_id(
    scenario: str,
    common: Sequence[tuple[str, Any]],
    overrides: Sequence[tuple[str, Any]],
    kind: str,
    options: Sequence[tuple[str, Any]],
) -> str:
    """A stable 16-hex-digit id: the same inputs give the same id on any machine."""
    doc = {
        "scenario": scenario,
        "overrides": [[k, v] for k, v in (*common, *overrides)],
        "task": kind,
        "options": dict(options),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _grid_axis(
    key: str, values: Sequence[Any], values_by_text: dict[tuple[str, str], Any]
) -> VaryAxis:
    """One grid entry as a compare.VaryAxis whose points are JSON texts; each value is
    kept, as given, in `values_by_text`."""
    keys = tuple(k.strip() for k in key.split(":"))
    where = f"grid.{key}"
    for k in keys:
        if not k or any(not part for part in k.split(".")):
            raise LlmsimError(f"empty key in {key!r}", key=where)
    points: list[tuple[str, ...]] = []
    for value in values:
        if len(keys) == 1:
            parts: list[Any] = [value]
        elif isinstance(value, list | tuple):
            parts = list(value)
        elif isinstance(value, str):
            try:
                texts = [p.strip() for p in split_top_level(value, ":")]
                parts = [yamlio.load_yaml_text(t) for t in texts]
            except (ValueError, yaml.YAMLError, LlmsimError) as exc:
                raise LlmsimError(f"{exc} in value {value!r}", key=where) from None
        else:
            raise LlmsimError(
                f"{len(keys)} keys vary together: give each value as a list of {len(keys)} "
                f"or a string 'A1:A2', got {value!r}",
                key=where,
            )
        if len(parts) != len(keys):
            raise LlmsimError(
                f"{len(keys)} keys but value {value!r} has {len(parts)} part(s)", key=where
            )
        points.append(tuple(_text(p) for p in parts))
        for k, p in zip(keys, parts, strict=True):
            values_by_text[(k, _text(p))] = p
    return VaryAxis(keys, tuple(points))


def expand_tasks(spec: SweepSpec, scenario_path: str = "") -> tuple[SweepTask, ...]:
    """The sweep's tasks in order: grid points (first key outermost) × list entries.
    `scenario_path` is where workers read the base scenario."""
    given: dict[tuple[str, str], Any] = {}
    axes = [_grid_axis(key, values, given) for key, values in spec.grid.items()]
    common = tuple(spec.common.items())
    seen = {k for k, _ in common}
    for axis in axes:
        for key in axis.keys:
            if key in seen:
                raise LlmsimError(f"{key} is set or varied twice", key="grid")
            seen.add(key)
    for i, mapping in enumerate(spec.entries):
        for key in mapping:
            if key in seen:
                raise LlmsimError(f"{key} is also in set or grid", key=f"list.{i}")
    points: list[Pairs] = [
        tuple((k, given[(k, v)]) for k, v in variant.assignments) for variant in expand(axes)
    ]
    entries: list[Pairs] = [tuple(e.items()) for e in spec.entries] or [()]
    options: Pairs = tuple(spec.options.model_dump().items()) if spec.task == "capacity" else ()
    tasks: list[SweepTask] = []
    for point in points:
        for entry in entries:
            overrides = (*point, *entry)
            tid = task_id(spec.scenario, common, overrides, spec.task, options)
            tasks.append(
                SweepTask(
                    len(tasks) + 1,
                    tid,
                    spec.name,
                    spec.task,
                    scenario_path,
                    overrides,
                    common,
                    options,
                )
            )
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise LlmsimError("two tasks have the same overrides", key="list")
    return tuple(tasks)


def load_sweep(path: str | Path, output: str | Path | None = None) -> Sweep:
    """Read and validate a sweep file; `output` replaces its table path."""
    file = Path(path)
    if not file.exists():
        raise LlmsimError("file not found", file=str(path))
    raw = yamlio.read_yaml(file)
    if not isinstance(raw, dict):
        raise LlmsimError("a sweep is a YAML mapping", file=str(path))
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, str(path), SweepSpec) from None
    scenario = (file.resolve().parent / spec.scenario).resolve()
    if not scenario.is_file():
        raise LlmsimError(f"file not found: {scenario}", file=str(path), key="scenario")
    try:
        tasks = expand_tasks(spec, str(scenario))
    except LlmsimError as exc:
        raise exc.at(file=str(path)) from None
    table = Path(output or spec.output or f"results/sweeps/{spec.name}.sqlite")
    return Sweep(spec, table, tasks)
