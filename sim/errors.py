"""One error type for bad input: it names the file, the key path and what was expected.

The CLI catches `LlmsimError` and prints its one line; library callers get a typed
exception instead of a traceback into pydantic or yaml internals.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LlmsimError(Exception):
    """Bad input. `str(err)` is the one line a user sees: `file: key.path: message`."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        self.message = message
        super().__init__(self.line())

    def line(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join([*parts, self.message])

    def at(self, file: str | None = None, key_prefix: str | None = None) -> LlmsimError:
        """The same error placed in a file and/or under a parent key."""
        key = self.key
        if key_prefix:
            key = f"{key_prefix}.{key}" if key else key_prefix
        return LlmsimError(self.message, file=file or self.file, key=key)


MAX_LISTED = 12  # past this many valid names, an error lists the closest ones only


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names most like `name` (case-insensitive), best first."""
    names = list(valid)
    by_lower = {v.lower(): v for v in names}
    found = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[f] for f in found]


def valid_names(name: str, valid: Iterable[str], plural: str) -> str:
    """The tail of an unknown-name message: the closest valid names first; all of them
    when there are few, else a count."""
    names = sorted(valid)
    near = closest(name, names)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    if len(names) <= MAX_LISTED or not near:
        shown = ", ".join(names[:60]) + (", ..." if len(names) > 60 else "")
        return f"{hint}valid {plural}: {shown}"
    return f"{hint}({len(names)} valid {plural}; `llmsim catalog` lists them)"


def unknown_name(
    kind: str, name: str, valid: Iterable[str], plural: str | None = None
) -> LlmsimError:
    shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
    return LlmsimError(f"unknown {kind} {shown}; {valid_names(name, valid, plural or kind + 's')}")
