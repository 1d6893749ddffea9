"""Reading YAML: libyaml's safe loader, plus three checks a plain `yaml.safe_load` lacks.

A key given twice in one mapping is an error (not "the last one wins"); an alias that
refers to a mapping or list containing it is an error; and aliases may expand a
document by at most `MAX_ALIAS_NODES` nodes beyond what is written, so a kilobyte
"billion laughs" file is refused at once instead of being validated for minutes. Every
YAML the project reads goes through here: scenarios, catalog files, recipes, sweeps,
and the values of `--set` and `--vary`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sim.errors import LlmsimError
from sim.spec.base import clipped, shown

# libyaml's safe loader when PyYAML was built with it (profiles are large), else Python's.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Nodes that aliases may add to a document beyond those written in it. A shipped file
# uses none; a "billion laughs" file of 1.5 KB expands to ~10^9 (every use of an alias
# counts the whole subtree it names, as validation would walk it).
MAX_ALIAS_NODES = 100_000

_MERGE = "tag:yaml.org,2002:merge"
_VALUE = "tag:yaml.org,2002:value"
_STR = "tag:yaml.org,2002:str"


class _Loader(_SafeLoader):
    """The safe loader whose value errors are YAML errors at the value's line: an int of
    more digits than Python converts to a number, a date such as 2023-13-45."""


def _marked(construct: Callable[..., Any]) -> Callable[[Any, yaml.Node], Any]:
    def checked(loader: Any, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError) as exc:
            what = node.tag.rsplit(":", 1)[-1]
            why = f"{len(str(node.value))} digits are too many" if what == "int" else str(exc)
            problem = f"cannot read {shown(node.value)} as {what}: {clipped(why)}"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None

    return checked


for _tag, _construct in (
    ("tag:yaml.org,2002:int", yaml.constructor.SafeConstructor.construct_yaml_int),
    ("tag:yaml.org,2002:timestamp", yaml.constructor.SafeConstructor.construct_yaml_timestamp),
):
    _Loader.add_constructor(_tag, _marked(_construct))


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _key_path(path: tuple[str, ...]) -> str | None:
    return ".".join(clipped(part) for part in path) or None


def _check_nodes(loader: Any, root: yaml.Node) -> None:
    """Duplicate keys, recursive aliases and alias expansion, on the composed node graph
    (an alias is the very node its anchor names, so the graph is shared, not copied):
    one pass over the distinct nodes, however much the aliases would expand."""
    expanded: dict[int, int] = {}  # id(node) -> nodes in its subtree, aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool, tuple[str, ...]]] = [(root, False, ())]
    while stack:
        node, done, path = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            children = _children(node)
            expanded[nid] = min(1 + sum(expanded[id(c)] for c in children), 10**15)
            continue
        if nid in expanded:
            continue
        if nid in on_path:
            kind = "mapping" if isinstance(node, yaml.MappingNode) else "list"
            raise LlmsimError(
                f"an alias of the {kind} anchored on line {_line(node)}, inside that {kind} "
                "(a recursive alias)",
                key=_key_path(path),
            )
        if isinstance(node, yaml.ScalarNode):
            expanded[nid] = 1
            continue
        on_path.add(nid)
        stack.append((node, True, path))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                name = "?"
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag not in (_MERGE, _VALUE):
                    # A key is its value as the mapping will hold it (1 and 0x1 are one).
                    plain = key_node.tag == _STR
                    key = key_node.value if plain else loader.construct_object(key_node)
                    name = str(key_node.value)
                    if key in first:
                        raise LlmsimError(
                            f"line {_line(key_node)}: duplicate key (first given on line "
                            f"{first[key]}); a mapping takes each key once",
                            key=_key_path((*path, name)),
                        )
                    first[key] = _line(key_node)
                stack.append((value_node, False, (*path, name)))
                stack.append((key_node, False, path))
        else:
            for i, item in enumerate(node.value):
                stack.append((item, False, (*path, str(i))))
    written = len(expanded)
    if expanded[id(root)] - written > MAX_ALIAS_NODES:
        raise LlmsimError(
            f"aliases expand this document from {written:,} nodes to "
            f"{expanded[id(root)]:,}; at most {MAX_ALIAS_NODES:,} more are allowed "
            "(write the values out, or use fewer aliases of aliases)"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load_yaml_text(text: str) -> Any:
    """Safe-load one YAML document with the checks of `read_yaml`. A syntax error is a
    `yaml.YAMLError`; a duplicate key, a recursive alias or an alias bomb an
    LlmsimError without a file (the caller places it)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(loader, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path | str) -> Any:
    """Safe-load one YAML file; a syntax error, a duplicate key or an alias bomb is one
    LlmsimError naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmsimError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LlmsimError(f"cannot read file: {why}", file=str(path)) from None
    try:
        return load_yaml_text(text)
    except LlmsimError as exc:
        raise exc.at(file=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LlmsimError(f"{where}malformed YAML: {problem}", file=str(path)) from None
