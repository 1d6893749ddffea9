"""Extension points chosen by name in a scenario: batching policies, pipeline schedules,
routers and speculative-decoding methods.

Each kind has one `Registry`. The module that implements an entry registers it with
the registry's decorator (`@POLICIES.register("vllm")`), so a new policy is one file
plus the line that imports it in its package's `__init__`.

A spec names entries and must validate the name (and a policy's parameters) when the
scenario is loaded, although the entries live in the engine, a layer above the spec.
A registry therefore knows the package that provides its entries and imports it on the
first lookup, the way entry points work: the spec depends on the *names*, never on an
engine module at import time (tests/test_layers.py checks the static imports).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sim.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, provider: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.provider = provider
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def _load(self) -> dict[str, T]:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.provider)
        return self._entries

    def names(self) -> list[str]:
        return sorted(self._load())

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __getitem__(self, name: str) -> T:
        """The entry called `name`; an unknown name is an error listing the valid ones."""
        entries = self._load()
        if name not in entries:
            raise unknown_name(self.kind, name, entries, plural=self.plural)
        return entries[name]

    def check(self, name: str) -> str:
        """`name` when it is registered, else ValueError (for pydantic validators)."""
        if name not in self._load():
            raise ValueError(
                unknown_name(self.kind, name, self._entries, plural=self.plural).message
            )
        return name


POLICIES: Registry = Registry("policy", "sim.engine.policies", plural="policies")
SCHEDULES: Registry = Registry("schedule", "sim.engine.pipeline")
ROUTERS: Registry = Registry("router", "sim.engine.router")
SPECULATORS: Registry = Registry("speculative method", "sim.plan.speculative")
