"""The catalogs: devices, nodes, clusters, calibration profiles, models, workloads and
scenarios, as YAML files found by name.

A checkout keeps them at the top level (`hardware/`, `models/`, ...); an installed wheel
carries the same files under `sim/_catalog/`. Users add their own directories with
`LLMSIM_CATALOG_PATH` (os.pathsep-separated roots laid out the same way); those are
searched first, so a user's file shadows a shipped one of the same name.

A name is matched case-insensitively against each file's `name` and `aliases` (the
Hugging Face id of a model, for instance), and against its file stem. An entry of
`LLMSIM_CATALOG_PATH` that is not such a root is an error, as is a catalog file that
cannot be read: its own file and key are named, never "unknown name".

Every catalog file is read by `sim.spec.yamlio.read_yaml` (duplicate keys and alias
bombs refused).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sim.errors import LlmsimError, unknown_name
from sim.spec.base import MAX_MESSAGE, clipped_to, shown, validation_error
from sim.spec.hardware import ClusterSpec, DeviceSpec, NodeSpec
from sim.spec.hf_config import model_from_hf_config
from sim.spec.model import ModelSpec
from sim.spec.profile import Profile
from sim.spec.runtime import RuntimeSpec
from sim.spec.yamlio import read_yaml

_PACKAGE = Path(__file__).resolve().parents[1]  # the sim package
ENV = "LLMSIM_CATALOG_PATH"
KINDS: dict[str, str] = {
    "device": "hardware/devices",
    "node": "hardware/nodes",
    "cluster": "hardware/clusters",
    "calibration": "hardware/calibration",
    "model": "models",
    "runtime": "runtimes",
    "workload": "workloads",
    "scenario": "scenarios",
    "sweep": "sweeps",
}

T = TypeVar("T", bound=BaseModel)


class NotInCatalog(LlmsimError):
    """A name no catalog file (and no path) answers to; raised for the name looked up
    itself only, so a caller may try another kind. An error inside a file that was
    found is a plain LlmsimError naming that file."""


def is_file(path: Path) -> bool:
    """`path.is_file()`, False (not an exception) for a name the OS refuses (too long,
    a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def roots() -> list[Path]:
    """Catalog roots, most specific first. Each entry of LLMSIM_CATALOG_PATH must be a
    directory laid out like the checkout (at least one of the KINDS folders)."""
    found: list[Path] = []
    for entry in os.environ.get(ENV, "").split(os.pathsep):
        if not entry:
            continue
        root = Path(entry).expanduser().resolve()
        if not is_dir(root):
            what = "is a file, not a directory" if is_file(root) else "does not exist"
            raise LlmsimError(f"catalog directory {shown(entry)} {what}", key=ENV)
        if not any(is_dir(root / folder) for folder in KINDS.values()):
            layout = ", ".join(sorted(set(KINDS.values())))
            raise LlmsimError(
                f"{shown(entry)} holds none of the catalog folders ({layout})", key=ENV
            )
        found.append(root)
    checkout = _PACKAGE.parent
    if (checkout / "hardware" / "devices").is_dir():
        found.append(checkout)
    bundled = _PACKAGE / "_catalog"
    if bundled.is_dir():
        found.append(bundled)
    return found


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
                data = {}  # loading it says "expected a mapping", naming the file
            name = data.get("name", path.stem)
            if not isinstance(name, str) or not name:
                raise LlmsimError(f"expected a name, got {shown(name)}", file=str(path), key="name")
            aliases = data.get("aliases") or []
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                message = f"expected a list of names, got {shown(aliases)}"
                raise LlmsimError(message, file=str(path), key="aliases")
            entry = Entry(kind, name, path, tuple(aliases), str(data.get("description", "")))
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
    if candidate.suffix in (".yaml", ".yml", ".json", ".csv") and is_file(candidate):
        return candidate
    for root in roots():  # a file named like the name: no need to read the whole catalog
        direct = root / KINDS[kind] / f"{name}.yaml"
        if is_file(direct):
            return direct
    entry = _index(kind, tuple(roots())).get(name.lower())
    if entry is None:
        raise NotInCatalog(unknown_name(kind, name, (e.name for e in entries(kind))).message)
    return entry.path


def _placed(exc: LlmsimError, file: Path | str, key: str) -> LlmsimError:
    """An error met while resolving a reference in `file` at `key`: kept as it is when
    it already names a file (the referenced file is the broken one), else placed."""
    if exc.file:
        return LlmsimError(exc.message, file=exc.file, key=exc.key)
    return LlmsimError(exc.message, file=str(file), key=key)


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
    except NotInCatalog as exc:
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
    try:
        device = device_of(node.device)
    except LlmsimError as exc:
        raise _placed(exc, find("node", name), "device") from None
    return node.model_copy(update={"device": device})


def load_cluster(name: str) -> ClusterSpec:
    """A cluster by name or path, its nodes and devices inlined (see `resolve_cluster`)."""
    spec = _load_cluster(name)
    try:
        return resolve_cluster(spec)
    except LlmsimError as exc:
        raise _placed(exc, find("cluster", name), exc.key or "node") from None


load_profile = _loader("calibration", Profile, "A calibration profile by name or path.")
load_runtime = _loader("runtime", RuntimeSpec, "A serving runtime by name or path.")


@functools.cache
def profile_for(device: DeviceSpec) -> Profile | None:
    """The device's calibration profile: the one it names, or one naming it."""
    if device.calibration:
        try:
            return load_profile(device.calibration)
        except NotInCatalog as exc:
            raise LlmsimError(exc.message, key=f"device {device.name}: calibration") from None
    for root in roots():  # by convention a profile is named after its device
        direct = root / KINDS["calibration"] / f"{device.name}.yaml"
        if is_file(direct):
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


def _resolved(load: Callable[[Any], Any], ref: Any, key: str) -> Any:
    """A reference loaded; an error without a file placed at `key` (relative to the
    cluster), one inside the referenced file kept as it is."""
    try:
        return load(ref)
    except LlmsimError as exc:
        if exc.file:
            raise LlmsimError(exc.message, file=exc.file, key=exc.key) from None
        raise LlmsimError(exc.message, key=key) from None


def resolve_cluster(spec: ClusterSpec) -> ClusterSpec:
    """The same cluster with every referenced node and device inlined, so the spec
    alone reproduces a run (the resolved scenario written beside results). An unknown
    reference is an error at its key (`node`, `node.device`, `torus.device`)."""
    if spec.torus is not None:
        device = _resolved(device_of, spec.torus.device, "torus.device")
        torus = spec.torus.model_copy(update={"device": device})
        return spec.model_copy(update={"torus": torus})
    assert spec.node is not None
    node = _resolved(node_of, spec.node, "node")
    node = node.model_copy(update={"device": _resolved(device_of, node.device, "node.device")})
    return spec.model_copy(update={"node": node})


def cluster_from_ref(ref: str) -> ClusterSpec:
    """A cluster by name; a node name means one such node. A name neither answers to is
    NotInCatalog; a broken file that does answer is that file's own error. A path is a
    node file when it gives `devices_per_node`, else a cluster file."""
    candidate = Path(ref).expanduser()
    if candidate.suffix in (".yaml", ".yml") and is_file(candidate):
        raw = read_yaml(candidate)
        if isinstance(raw, dict) and "devices_per_node" in raw:
            node = load_node(ref)
            return ClusterSpec(name=node.name, node=node, nodes=1)
        return load_cluster(ref)
    try:
        find("cluster", ref)
    except NotInCatalog:
        try:
            find("node", ref)
        except NotInCatalog:
            names = [e.name for k in ("cluster", "node") for e in entries(k)]
            raise NotInCatalog(unknown_name("cluster", ref, names).message) from None
        node = load_node(ref)
        return ClusterSpec(name=node.name, node=node, nodes=1)
    return load_cluster(ref)


@functools.cache
def load_model(name: str) -> ModelSpec:
    """A model by catalog name, Hugging Face alias, YAML path or `config.json` path."""
    candidate = Path(name).expanduser()
    if is_dir(candidate) and is_file(candidate / "config.json"):
        candidate = candidate / "config.json"
    if candidate.suffix == ".json" and is_file(candidate):
        try:
            return model_from_hf_config(candidate)
        except LlmsimError as exc:  # its messages quote config values whole: bound them
            message = clipped_to(exc.message, MAX_MESSAGE)
            raise LlmsimError(message, file=exc.file, key=exc.key) from None
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
