"""The base of every spec: strict, frozen pydantic models, unit-parsing field types, and
the one formatter that turns a pydantic validation error into a one-line LlmsimError.

Specs are data. They are validated once at load, never mutated, and an unknown key is
an error. Quantities that YAML may write with a unit (`80 GB`, `2039 GB/s`, `5 us`,
`312 TFLOPS`) are parsed into base units (bytes, bytes/s, seconds, FLOP/s) here.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from sim import units
from sim.errors import LlmsimError, valid_names


def _wrap(parse: Any) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value)
        return value

    return check


Bytes = Annotated[float, BeforeValidator(_wrap(units.parse_bytes))]
BytesPerS = Annotated[float, BeforeValidator(_wrap(units.parse_rate))]
Seconds = Annotated[float, BeforeValidator(_wrap(units.parse_seconds))]
FlopsPerS = Annotated[float, BeforeValidator(_wrap(units.parse_flops))]


class Spec(BaseModel):
    """Strict and frozen: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def __hash__(self) -> int:
        # Specs hold dicts (sources, peak_flops); hash their canonical JSON instead, so a
        # spec can key a cache (e.g. the per-layer op plan).
        return hash((type(self).__name__, self.model_dump_json()))


# ------------------------------------------------------------------ validation errors

_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "tuple", "none"}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
MAX_SHOWN = 80  # characters of a bad value an error repeats (hostile input stays short)


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut to MAX_SHOWN characters."""
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python converts to text
        digits = int(value.bit_length() * 0.30103) + 1 if isinstance(value, int) else 0
        text = f"<an integer of about {digits:,} digits>" if digits else "<a value>"
    return clipped(text)


def clipped(text: str) -> str:
    """Text (a name, a path) cut to MAX_SHOWN characters, unquoted."""
    return clipped_to(text, MAX_SHOWN)


def _member_tag(part: str) -> bool:
    """Location parts pydantic adds for union members and validators, not YAML keys."""
    return (
        part.startswith("function-")
        or part in _TYPE_TAGS
        or (part[:1].isupper() and part.isidentifier() and "_" not in part)
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _discriminator(annotation: Any) -> str | None:
    """The tag key of a discriminated union inside an annotation (Optional included)."""
    for meta in getattr(annotation, "__metadata__", ()):
        tag = getattr(meta, "discriminator", None)
        if isinstance(tag, str):
            return tag
    for arg in get_args(annotation):
        tag = _discriminator(arg)
        if tag is not None:
            return tag
    return None


def _tagged(field: FieldInfo | None) -> tuple[str, dict[str, type[BaseModel]]]:
    """A discriminated union field's tag key and its members by tag value (empty for
    any other field)."""
    if field is None:
        return "", {}
    tag = field.discriminator if isinstance(field.discriminator, str) else None
    tag = tag or _discriminator(field.annotation)
    if tag is None:
        return "", {}
    members: dict[str, type[BaseModel]] = {}
    for model in _models_in(field.annotation):
        for value in get_args(model.model_fields[tag].annotation):
            members[str(value)] = model
    return tag, members


def _plural(word: str) -> str:
    return word + ("es" if word.endswith("s") else "s")


def validation_error(
    exc: ValidationError,
    file: str | None,
    root: type[BaseModel] | None = None,
    prefix: str | None = None,
    origin: dict[str, str] | None = None,
) -> LlmsimError:
    """A pydantic error as one line: the YAML key path (union members and tags taken
    out of it, a tagged variant named in the message instead), a plain message, and,
    for an unknown key, the valid ones. `root` is the model that was validated (to list
    valid keys and tags); `origin` maps a top-level key to the file it came from (a
    workload recipe's keys)."""
    errors = exc.errors()
    # In a union (a name or an inline mapping), the deepest error is the informative one.
    err = max(errors, key=lambda e: len(e.get("loc", ())))
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    path: list[str] = []
    variant = ""
    model: Any = root  # the model whose keys the next part names (None: unknown)
    owner: Any = root  # the model the last part was a key of
    field: FieldInfo | None = None
    for raw in err.get("loc", ()):
        part = str(raw)
        tag, members = _tagged(field)
        if part in members:  # the variant a tagged union chose: named, not a key
            variant = f" ({tag}: {part})"
            model, field = members[part], None
            continue
        if isinstance(raw, int):  # an item of a list
            path.append(part)
            continue
        fields = getattr(model, "model_fields", {})
        if _member_tag(part) and part not in fields:  # a union member or a validator
            continue
        path.append(part)
        owner = model
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        inner = _models_in(field.annotation) if field is not None else []
        if len(inner) == 1:
            model, field = inner[0], None
        elif not inner:
            model = None
    if kind == "llmsim_key":
        path += str(ctx["key"]).split(".")
        msg = str(ctx["message"])
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx["discriminator"]).strip("'")
        valid = ", ".join(sorted(_tagged(field)[1]))
        path.append(tag)
        if kind == "union_tag_invalid":
            msg = f"unknown {tag} {shown(ctx['tag'])}; valid {_plural(tag)}: {valid}"
        else:
            msg = f"required key is missing; valid {_plural(tag)}: {valid}"
    elif kind == "extra_forbidden":
        known = getattr(owner, "model_fields", {})
        valid_keys = [f.alias or name for name, f in known.items()]
        msg = "unknown key" + (f"; {valid_names(path[-1], valid_keys, 'keys')}" if known else "")
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        msg = f"must be {_BOUNDS[kind]} {bound}, got {shown(got)}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        msg = f"expected a mapping, got {shown(got)}"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = f"expected an integer, got {shown(got)}"
    elif kind in ("float_parsing", "float_type", "finite_number"):
        msg = f"expected a finite number, got {shown(got)}"
    elif kind == "value_error":
        pass  # our validators' messages already show the value
    elif "input" in err and not isinstance(got, dict | list) and shown(got) not in msg:
        msg = f"{msg} (got {shown(got)})"
    key = ".".join([*([prefix] if prefix else []), *path]) or None
    source = (origin or {}).get(path[0]) if path else None
    return LlmsimError(_bounded(msg, got) + variant, file=source or file, key=_clip_key(key))


MAX_MESSAGE = 1000  # characters of a message: room for a list of valid names, no more


def _bounded(msg: str, got: Any) -> str:
    """A validator's message with the bad value it quotes cut to `shown` (units and
    dtypes repeat the whole input), and the whole cut to MAX_MESSAGE."""
    if got is not None and not isinstance(got, bool | int | float):
        try:
            texts = {repr(got), str(got)}
        except ValueError:  # holds an int too long to print: nothing quotes it whole
            texts = set()
        for text in texts:
            if len(text) > MAX_SHOWN and text in msg:
                msg = msg.replace(text, shown(got))
    return clipped_to(msg, MAX_MESSAGE)


def _clip_key(key: str | None) -> str | None:
    if key is None:
        return None
    return ".".join(clipped(part) for part in key.split("."))


def clipped_to(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
