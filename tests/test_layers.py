"""The layers of `sim/` (docs/architecture.md): data flows one way, so no module
imports from a layer above its own and the package has no import cycles.

Every `import` and `from ... import` statement counts, wherever it stands (module level,
inside a function, under TYPE_CHECKING): a function-level import of a higher layer is
still an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SIM = Path(__file__).resolve().parent.parent / "sim"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("sim.errors", "sim.units", "sim.registry", "sim.progress"),
    ("sim.spec",),
    ("sim.arith",),
    ("sim.cost",),
    ("sim.workload",),
    ("sim.plan",),
    ("sim.engine",),
    ("sim.results",),
    ("sim.studies",),
    ("sim.fidelity",),
    ("sim.cli", "sim.__main__"),
)
# Beside the stack: the calibration harness builds on spec, arith and cost; only the
# command line reaches it (and only where torch is installed).
BESIDE = {"sim.calibrate": 3}
TOP = "sim"  # the package itself: the public API, may import any layer


def module_name(path: Path) -> str:
    parts = path.relative_to(SIM.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The `sim` modules a file imports (`from sim import units` is `sim.units`)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "sim")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            if base.split(".")[0] != "sim":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return found


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SIM.parent / rel).with_suffix(".py").is_file() or (
        SIM.parent / rel / "__init__.py"
    ).is_file()


def layer_of(module: str) -> int | None:
    if module == TOP:
        return None
    for prefix, level in BESIDE.items():
        if module == prefix or module.startswith(prefix + "."):
            return level
    for level, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def graph() -> nx.DiGraph:
    g: nx.DiGraph = nx.DiGraph()
    for path in sorted(SIM.rglob("*.py")):
        mod = module_name(path)
        g.add_node(mod)
        for dep in imports(path):
            if dep != mod:
                g.add_edge(mod, dep)
    return g


def test_every_module_has_a_layer() -> None:
    for mod in graph().nodes:
        layer_of(mod)


def test_no_upward_imports() -> None:
    upward = []
    for mod, dep in graph().edges:
        here, there = layer_of(mod), layer_of(dep)
        if here is None:  # the public API
            continue
        if there is None:
            upward.append(f"{mod} -> {dep} (the package's public API)")
            continue
        beside_dep = any(dep == p or dep.startswith(p + ".") for p in BESIDE)
        beside_mod = any(mod == p or mod.startswith(p + ".") for p in BESIDE)
        if beside_dep and not beside_mod and not mod.startswith("sim.cli"):
            upward.append(f"{mod} -> {dep} (only the command line uses the calibration harness)")
        elif there > here and not beside_dep:
            upward.append(f"{mod} -> {dep}")
    assert not upward, "imports from a layer above:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    g = graph()
    g.remove_node(TOP)
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles[:20])
