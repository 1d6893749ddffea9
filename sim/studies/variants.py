"""Variants of one scenario: `--vary` axes parsed and expanded into their product.

`--vary KEY=V1,V2` is one axis: the values are YAML (`parallel.tp=4,8` are ints), split
on top-level commas only, so a mapping or a list passes whole
(`scheduler={policy: vllm},{policy: sarathi}`). `--vary K1:K2=A1:A2,B1:B2` varies keys
together (zipped). Several axes form a cartesian product, the first axis outermost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from sim.errors import LlmsimError
from sim.spec.base import shown
from sim.spec.yamlio import load_yaml_text

_OPEN = {"{": "}", "[": "]", "(": ")"}
_CLOSE = {v: k for k, v in _OPEN.items()}


def split_top_level(text: str, sep: str) -> list[str]:
    """Split on `sep` outside brackets and quotes: `{a: 1, b: 2},[3, 4]` is two parts.

    Raises ValueError on unbalanced brackets or an unterminated quote."""
    parts: list[str] = []
    stack: list[str] = []
    quote: str | None = None
    start = 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            stack.append(ch)
        elif ch in _CLOSE:
            if not stack or stack.pop() != _CLOSE[ch]:
                raise ValueError(f"unbalanced {ch!r}")
        elif ch == sep and not stack:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise ValueError(f"unterminated {quote} quote")
    if stack:
        raise ValueError(f"unclosed {stack[-1]!r}")
    parts.append(text[start:])
    return parts


@dataclass(frozen=True)
class VaryAxis:
    """One `--vary`: keys varied together, and the raw YAML text of each point."""

    keys: tuple[str, ...]
    points: tuple[tuple[str, ...], ...]


def parse_vary(spec: str, where: str = "--vary") -> VaryAxis:
    """`KEY=V1,V2,...` or `K1:K2=A1:A2,B1:B2`; errors name `where` (the flag or key)."""

    def bad(message: str) -> LlmsimError:
        return LlmsimError(message, key=where)

    form = "expected KEY=V1,V2,... or K1:K2=A1:A2,B1:B2"
    if "=" not in spec:
        raise bad(f"{form} (got {spec!r})")
    lhs, rhs = spec.split("=", 1)
    keys = tuple(k.strip() for k in lhs.split(":"))
    for key in keys:
        if not key or any(not part for part in key.split(".")):
            raise bad(f"{form}; empty key in {lhs.strip()!r} (got {spec!r})")
    if len(set(keys)) != len(keys):
        raise bad(f"a key appears twice in {lhs.strip()!r}")
    if not rhs.strip():
        raise bad(f"{form}; no values for {lhs.strip()} (got {spec!r})")
    try:
        values = [v.strip() for v in split_top_level(rhs, ",")]
    except ValueError as exc:
        raise bad(f"{exc} in values {rhs!r}") from None
    points: list[tuple[str, ...]] = []
    for value in values:
        if len(keys) == 1:
            parts = [value]
        else:
            try:
                parts = [p.strip() for p in split_top_level(value, ":")]
            except ValueError as exc:
                raise bad(f"{exc} in value {value!r}") from None
            if len(parts) != len(keys):
                raise bad(
                    f"{len(keys)} keys {lhs.strip()} but value {value!r} has {len(parts)} "
                    f"part(s); give one ':'-separated part per key"
                )
        for key, part in zip(keys, parts, strict=True):
            if not part:
                raise bad(f"{key} has an empty value in {spec!r}")
            try:
                load_yaml_text(part)
            except yaml.YAMLError:
                raise bad(f"{key}: {shown(part)} is not valid YAML") from None
            except LlmsimError as exc:
                raise bad(f"{key}: {exc.message}") from None
        points.append(tuple(parts))
    return VaryAxis(keys, tuple(points))


@dataclass(frozen=True)
class Variant:
    """One point of the product: `(key, raw YAML value)` pairs, 1-based `index`."""

    index: int
    assignments: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """The varied `key=value` pairs, as given."""
        return " ".join(f"{k}={v}" for k, v in self.assignments) or "base"

    @property
    def short_label(self) -> str:
        """The values only (the keys are the same for every variant)."""
        return ", ".join(v for _, v in self.assignments) or "base"

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.assignments]

    def values(self) -> dict[str, Any]:
        """The varied keys with their values parsed as YAML."""
        return {k: load_yaml_text(v) for k, v in self.assignments}


def expand(axes: Sequence[VaryAxis]) -> list[Variant]:
    """The cartesian product of the axes (first axis outermost), in order."""
    seen: set[str] = set()
    for axis in axes:
        for key in axis.keys:
            if key in seen:
                raise LlmsimError(f"{key} is varied twice", key="--vary")
            seen.add(key)
    out = []
    for i, combo in enumerate(itertools.product(*(axis.points for axis in axes)), start=1):
        pairs = tuple(
            (key, value)
            for axis, point in zip(axes, combo, strict=True)
            for key, value in zip(axis.keys, point, strict=True)
        )
        out.append(Variant(i, pairs))
    return out


def parse_window(text: str, where: str = "--window") -> tuple[float, float]:
    """`START:END` in seconds of simulated time."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start, end = float(parts[0]), float(parts[1])
    except ValueError:
        raise LlmsimError(f"expected START:END in seconds (got {text!r})", key=where) from None
    if not 0 <= start < end:
        raise LlmsimError(f"expected 0 <= START < END (got {text!r})", key=where)
    return start, end
