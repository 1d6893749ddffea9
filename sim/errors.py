"""One error type for bad input: it names the file, the key path and what was expected.

The CLI catches `LlmsimError` and prints its one line; library callers get a typed
exception instead of a traceback into pydantic or yaml internals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


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


def unknown_name(
    kind: str, name: str, valid: Iterable[str], plural: str | None = None
) -> LlmsimError:
    names = sorted(valid)
    shown = ", ".join(names[:60]) + (", ..." if len(names) > 60 else "")
    return LlmsimError(f"unknown {kind} {name!r}; valid {plural or kind + 's'}: {shown}")


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "tuple", "none"}


def _union_tag(part: str) -> bool:
    """Location parts pydantic adds for union members and validators, not YAML keys."""
    return (
        part.startswith("function-")
        or part in _TYPE_TAGS
        or (part[:1].isupper() and part.isidentifier() and "_" not in part)
    )


def pydantic_error(exc: Exception, file: str | None, prefix: str | None = None) -> LlmsimError:
    """Turn the first pydantic ValidationError entry into one LlmsimError line."""
    errors: Sequence[dict] = getattr(exc, "errors", lambda: [])()
    if not errors:
        return LlmsimError(str(exc), file=file, key=prefix)
    # In a union (a name or an inline mapping), the deepest error is the informative one.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = [str(p) for p in first.get("loc", ()) if not _union_tag(str(p))]
    key = ".".join(loc)
    if prefix:
        key = f"{prefix}.{key}" if key else prefix
    kind = first.get("type", "")
    msg = first.get("msg", "invalid value")
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    elif (
        "input" in first
        and not isinstance(first["input"], dict | list)
        and repr(first["input"]) not in msg
    ):
        msg = f"{msg} (got {first['input']!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return LlmsimError(msg, file=file, key=key or None)
