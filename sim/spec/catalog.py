"""The catalogs: devices, nodes, clusters, calibration profiles, models, workloads and
scenarios, as YAML files found by name.

A checkout keeps them at the top level (`hardware/`, `models/`, ...); an installed wheel
carries the same files under `sim/_catalog/`. Users add their own directories with
`LLMSIM_CATALOG_PATH` (os.pathsep-separated roots laid out the same way); those are
searched first, so a user's file shadows a shipped one of the same name.

A name is matched case-insensitively against each file's `name` and `aliases` (the
Hugging Face id of a model, for instance), and against its file stem.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from sim.errors import LlmsimError, unknown_name
from sim.spec.base import validation_error
from sim.spec.hardware import ClusterSpec, DeviceSpec, NodeSpec
from sim.spec.hf_config import model_from_hf_config
from sim.spec.model import ModelSpec
from sim.spec.profile import Profile

_PACKAGE = Path(__file__).resolve().parents[1]  # the sim package
# libyaml's safe loader when PyYAML was built with it (profiles are large), else Python's.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KINDS: dict[str, str] = {
    "device": "hardware/devices",
    "node": "hardware/nodes",
    "cluster": "hardware/clusters",
    "calibration": "hardware/calibration",
    "model": "models",
    "workload": "workloads",
    "scenario": "scenarios",
}

T = TypeVar("T", bound=BaseModel)


def roots() -> list[Path]:
    """Catalog roots, most specific first."""
    found: list[Path] = []
    for entry in os.environ.get("LLMSIM_CATALOG_PATH", "").split(os.pathsep):
        if entry:
            found.append(Path(entry).expanduser().resolve())
    checkout = _PACKAGE.parent
    if (checkout / "hardware" / "devices").is_dir():
        found.append(checkout)
    bundled = _PACKAGE / "_catalog"
    if bundled.is_dir():
        found.append(bundled)
    return found


def read_yaml(path: Path | str) -> Any:
    """Safe-load one YAML file; a syntax error names the file and the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmsimError("file not found", file=str(path)) from None
    except OSError as exc:
        raise LlmsimError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LlmsimError(f"{where}malformed YAML: {problem}", file=str(path)) from None


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    path: Path
    aliases: tuple[str, ...]
    description: str


@functools.cache
def _index(kind: str, roots_key: tuple[Path, ...]) -> dict[str, Entry]:
    """Every catalog file of a kind, keyed by lower-cased name, alias and stem."""
    index: dict[str, Entry] = {}
    for root in reversed(roots_key):  # later roots are shadowed by earlier ones
        folder = root / KINDS[kind]
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.csv")):
            data: Any = {} if path.suffix == ".csv" else read_yaml(path)
            if not isinstance(data, dict):
                data = {}
            name = str(data.get("name", path.stem))
            aliases = tuple(str(a) for a in data.get("aliases", ()) or ())
            entry = Entry(kind, name, path, aliases, str(data.get("description", "")))
            for key in (name, path.stem, *aliases):
                index[key.lower()] = entry
    return index


def entries(kind: str) -> list[Entry]:
    """Distinct catalog entries of a kind, sorted by name."""
    unique = {e.path: e for e in _index(kind, tuple(roots())).values()}
    return sorted(unique.values(), key=lambda e: e.name)


def find(kind: str, name: str) -> Path:
    """The file behind a name (or a path to a file that exists)."""
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml", ".json", ".csv") and candidate.is_file():
        return candidate
    for root in roots():  # a file named like the name: no need to read the whole catalog
        direct = root / KINDS[kind] / f"{name}.yaml"
        if direct.is_file():
            return direct
    entry = _index(kind, tuple(roots())).get(name.lower())
    if entry is None:
        raise unknown_name(kind, name, (e.name for e in entries(kind)))
    return entry.path


def _parse(cls: type[T], data: Any, file: str, prefix: str | None = None) -> T:
    if not isinstance(data, dict):
        raise LlmsimError(f"expected a mapping, got {type(data).__name__}", file=file, key=prefix)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, file, cls, prefix) from None


_CACHES: list[Any] = []


def _loader(kind: str, cls: type[T], doc: str | None = None) -> Callable[[str], T]:
    @functools.cache
    def load(name: str) -> T:
        path = find(kind, name)
        return _parse(cls, read_yaml(path), str(path))

    load.__doc__ = doc or f"The {kind} spec named `name` (or at a path)."
    _CACHES.append(load)
    return load


_load_catalog_device = _loader("device", DeviceSpec)


def load_device(name: str) -> DeviceSpec:
    """A device by name or path; failing that, one a calibration profile measured and
    carries (`llmsim calibrate --device cpu` makes such a profile)."""
    try:
        return _load_catalog_device(name)
    except LlmsimError as exc:
        carried = _carried_device(name.lower())
        if carried is None:
            raise exc from None
        return carried


@functools.cache
def _carried_device(name: str) -> DeviceSpec | None:
    for entry in entries("calibration"):
        raw = read_yaml(entry.path)
        spec = raw.get("device_spec") if isinstance(raw, dict) else None
        if isinstance(spec, dict) and str(spec.get("name", "")).lower() == name:
            profile = load_profile(entry.name)
            assert profile.device_spec is not None
            return profile.device_spec.model_copy(update={"calibration": profile.name})
    return None


_load_node = _loader("node", NodeSpec)
_load_cluster = _loader("cluster", ClusterSpec)


def load_node(name: str) -> NodeSpec:
    """A node by name or path, its device inlined."""
    node = _load_node(name)
    return node.model_copy(update={"device": device_of(node.device)})


def load_cluster(name: str) -> ClusterSpec:
    """A cluster by name or path, its nodes and devices inlined (see `resolve_cluster`)."""
    return resolve_cluster(_load_cluster(name))


load_profile = _loader("calibration", Profile, "A calibration profile by name or path.")


@functools.cache
def profile_for(device: DeviceSpec) -> Profile | None:
    """The device's calibration profile: the one it names, or one naming it."""
    if device.calibration:
        try:
            return load_profile(device.calibration)
        except LlmsimError as exc:
            raise LlmsimError(exc.message, key=f"device {device.name}: calibration") from None
    for root in roots():  # by convention a profile is named after its device
        direct = root / KINDS["calibration"] / f"{device.name}.yaml"
        if direct.is_file():
            profile = load_profile(str(direct))
            if profile.device == device.name:
                return profile
    for entry in entries("calibration"):
        raw = read_yaml(entry.path)
        if isinstance(raw, dict) and raw.get("device") == device.name:
            return load_profile(entry.name)
    return None


def device_of(ref: str | DeviceSpec) -> DeviceSpec:
    return ref if isinstance(ref, DeviceSpec) else load_device(ref)


def node_of(ref: str | NodeSpec) -> NodeSpec:
    return ref if isinstance(ref, NodeSpec) else load_node(ref)


def resolve_cluster(spec: ClusterSpec) -> ClusterSpec:
    """The same cluster with every referenced node and device inlined, so the spec
    alone reproduces a run (the resolved scenario written beside results)."""
    if spec.torus is not None:
        torus = spec.torus.model_copy(update={"device": device_of(spec.torus.device)})
        return spec.model_copy(update={"torus": torus})
    assert spec.node is not None
    node = node_of(spec.node)
    node = node.model_copy(update={"device": device_of(node.device)})
    return spec.model_copy(update={"node": node})


def cluster_from_ref(ref: str) -> ClusterSpec:
    """A cluster by name; a node name means one such node."""
    try:
        return load_cluster(ref)
    except LlmsimError as exc:
        try:
            node = load_node(ref)
        except LlmsimError:
            names = [e.name for k in ("cluster", "node") for e in entries(k)]
            raise unknown_name("cluster", ref, names) from exc
        return ClusterSpec(name=node.name, node=node, nodes=1)


@functools.cache
def load_model(name: str) -> ModelSpec:
    """A model by catalog name, Hugging Face alias, YAML path or `config.json` path."""
    candidate = Path(name).expanduser()
    if candidate.is_dir() and (candidate / "config.json").is_file():
        candidate = candidate / "config.json"
    if candidate.suffix == ".json" and candidate.is_file():
        return model_from_hf_config(candidate)
    path = find("model", name)
    return _parse(ModelSpec, read_yaml(path), str(path))


def parse_spec(cls: type[T], data: Any, file: str, prefix: str | None = None) -> T:
    """Validate inline spec data (from a scenario) with errors placed at `prefix`."""
    return _parse(cls, data, file, prefix)


def clear_cache() -> None:
    """Forget loaded files (tests that write catalog files call this)."""
    _index.cache_clear()
    load_model.cache_clear()
    profile_for.cache_clear()
    _carried_device.cache_clear()
    for cached in _CACHES:
        cached.cache_clear()
