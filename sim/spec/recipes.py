"""Workload recipes: `workload: {recipe: NAME, ...}` merged over a named recipe file of
the workloads catalog (a recipe may name another). The scenario's keys win; a mapping of
the same `process`/`dist` is merged key by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.errors import LlmsimError
from sim.spec import catalog, yamlio
from sim.spec.base import shown

_RECIPE_META = ("name", "description", "source", "aliases", "notes")


def resolve_recipe(data: dict, base_dir: Path | None = None) -> dict:
    """Merge `workload: {recipe: NAME, ...}` over the named recipe in workloads/.

    The scenario's keys override the recipe's. A mapping of the same `process`/`dist`
    is merged key by key (so `lengths: {max_prompt: 4096}` keeps the recipe's path);
    giving lengths in one form drops the recipe's other forms, and `requests` drops the
    recipe's `duration_s` (and the reverse). Error keys are relative to the workload
    mapping (`recipe`), for the caller to place under its own prefix.
    """
    return merge_recipe(data, base_dir, ())[0]


def merge_recipe(
    data: dict, base_dir: Path | None, seen: tuple[Path, ...]
) -> tuple[dict, dict[str, Path]]:
    """The merged mapping, and for each top-level key taken from a recipe, its file."""
    if "recipe" not in data:
        return dict(data), {}
    name = data["recipe"]
    if not isinstance(name, str) or not name:
        raise LlmsimError(f"expected a recipe name, got {shown(name)}", key="recipe")
    local = (base_dir or Path.cwd()) / name
    try:
        path = local if local.suffix in (".yaml", ".yml") and catalog.is_file(local) else None
        path = path or catalog.find("workload", name)
    except catalog.NotInCatalog:
        recipes = sorted(e.name for e in catalog.entries("workload") if e.path.suffix == ".yaml")
        message = f"unknown recipe {shown(name)}; valid recipes: {', '.join(recipes)}"
        raise LlmsimError(message, key="recipe") from None
    if path.suffix not in (".yaml", ".yml"):
        raise LlmsimError(f"{shown(name)} is not a recipe (.yaml)", key="recipe")
    path = path.resolve()
    if path in seen:
        raise LlmsimError("recipe includes itself", file=str(path), key="recipe")
    raw = yamlio.read_yaml(path)
    if not isinstance(raw, dict):
        raise LlmsimError("expected a mapping", file=str(path))
    recipe = _rebase_paths({k: v for k, v in raw.items() if k not in _RECIPE_META}, path.parent)
    recipe, origin = merge_recipe(recipe, path.parent, (*seen, path))
    origin = {k: origin.get(k, path) for k in recipe}

    given = {k: v for k, v in data.items() if k != "recipe"}
    dropped: set[str] = set()
    if "trace" in given:
        dropped |= {"arrival", "prompt", "output", "lengths"}
    if "lengths" in given:
        dropped |= {"prompt", "output", "trace"}
    if given.keys() & {"prompt", "output"}:
        dropped |= {"lengths", "trace"}
    if "arrival" in given:
        dropped.add("trace")
    if "requests" in given:
        dropped.add("duration_s")
    if "duration_s" in given:
        dropped.add("requests")
    merged = {k: v for k, v in recipe.items() if k not in dropped}
    for key, value in given.items():
        merged[key] = _merge(merged.get(key), value)
        origin.pop(key, None)
    return merged, {k: v for k, v in origin.items() if k in merged}


def _merge(base: Any, over: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    for tag in ("process", "dist"):
        if tag in over and over[tag] != base.get(tag):
            return over  # another variant: the recipe's other keys would not fit it
    return {**base, **over}


def _rebase_paths(value: Any, folder: Path) -> Any:
    """A recipe's relative `path:` that exists beside the recipe is made absolute, so
    it survives being merged into a scenario elsewhere; others resolve as usual."""
    if isinstance(value, list):
        return [_rebase_paths(v, folder) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _rebase_paths(v, folder) for k, v in value.items()}
    path = out.get("path")
    if isinstance(path, str) and not Path(path).is_absolute() and (folder / path).is_file():
        out["path"] = str((folder / path).resolve())
    return out
