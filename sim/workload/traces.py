"""Trace and length files: the Azure LLM inference CSV and a plain
`arrival_s,prompt_tokens,output_tokens` CSV (or two-column `prompt_tokens,output_tokens`
length samples), read with pandas and checked row by row.

A broken row — a missing or non-numeric value, a token count that is not a positive
integer, a timestamp going back — is one error naming the file, its line number (comment
and blank lines counted) and the column; rows are never dropped. Loaded tables are
cached by path, modification time and size, so a sweep reads a trace once.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from sim.errors import LlmsimError
from sim.spec import catalog
from sim.spec.base import clipped, shown
from sim.spec.workload import MAX_TOKENS


def resolve_path(path: str, base_dir: Path | None, key: str) -> Path:
    """A data file: absolute, or relative to `base_dir` (the scenario's directory,
    default the working directory), then to each catalog root."""
    given = Path(path).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        bases = [base_dir if base_dir is not None else Path.cwd(), *catalog.roots()]
        candidates = [b / given for b in bases]
    for candidate in candidates:
        if catalog.is_file(candidate):
            return candidate
    looked = clipped(", ".join(str(c.parent) for c in candidates))
    raise LlmsimError(f"file not found: {shown(path)} (looked in {looked})", key=key)


# -------------------------------------------------------------------------- trace CSVs

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
PLAIN_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
TraceFormat = Literal["azure", "plain", "auto"]


@dataclass(frozen=True, eq=False)
class Table:
    arrival_s: np.ndarray | None
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray


def load_trace(path: Path | str, format: str = "auto") -> pd.DataFrame:
    """A trace as a DataFrame with columns arrival_s, prompt_tokens, output_tokens.

    Azure files (TIMESTAMP, ContextTokens, GeneratedTokens) get arrival_s in seconds
    since their first row; plain files keep their arrival_s. Lines starting with '#'
    are comments. A bad row raises LlmsimError naming the file, line and column.
    """
    if format not in ("azure", "plain", "auto"):
        raise LlmsimError(
            f"unknown trace format {shown(format)}; valid formats: auto, azure, plain"
        )
    path = Path(path)
    if not catalog.is_file(path):
        raise LlmsimError("file not found", file=clipped(str(path)))
    table = load_table(path, format, True)
    return pd.DataFrame(
        {
            "arrival_s": np.array(table.arrival_s),
            "prompt_tokens": np.array(table.prompt_tokens),
            "output_tokens": np.array(table.output_tokens),
        }
    )


def load_table(path: Path, fmt: str, need_arrivals: bool) -> Table:
    stat = path.stat()  # part of the cache key: an edited file is read again
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size, fmt, need_arrivals)


def load_column(path: Path, column: str, key: str) -> np.ndarray:
    stat = path.stat()
    return _load_column_cached(str(path), stat.st_mtime_ns, stat.st_size, column, key)


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, _mtime: int, _size: int, fmt: str, need_arrivals: bool) -> Table:
    path = Path(name)
    header = _header(path)
    kind = _detect(path, header, fmt, need_arrivals)
    time_col, prompt_col, output_col = AZURE_COLUMNS if kind == "azure" else PLAIN_COLUMNS
    names = [prompt_col, output_col] + ([] if kind == "lengths" else [time_col])
    frame = _read(path, names)
    checks = {c: _check_tokens(frame[c]) for c in (prompt_col, output_col)}
    if kind != "lengths":
        checks[time_col] = _check_times(frame[time_col], azure=kind == "azure")
    # Report the earliest bad row in the file, whichever column it is in.
    failures = [
        (row, header.index(c), c, msg) for c, (_, row, msg) in checks.items() if row is not None
    ]
    if failures:
        row, _, column, message = min(failures)
        raise _row_error(path, row, column, message)
    times = None
    if kind != "lengths":
        times = checks[time_col][0]
        back = np.flatnonzero(np.diff(times) < 0)
        if len(back):
            row = int(back[0]) + 1
            now, before = frame[time_col].iloc[row], frame[time_col].iloc[row - 1]
            message = f"time goes backwards: {now} comes after {before} on the previous row"
            raise _row_error(path, row, time_col, message)
    table = Table(times, checks[prompt_col][0], checks[output_col][0])
    for arr in (table.arrival_s, table.prompt_tokens, table.output_tokens):
        if arr is not None:
            arr.setflags(write=False)
    return table


@functools.lru_cache(maxsize=32)
def _load_column_cached(name: str, _mtime: int, _size: int, column: str, key: str) -> np.ndarray:
    path = Path(name)
    header = _header(path)
    if column not in header and set(AZURE_COLUMNS) <= set(header):
        # Plain names also address an Azure file's columns.
        column = dict(zip(PLAIN_COLUMNS, AZURE_COLUMNS, strict=True)).get(column, column)
    if column not in header:
        raise LlmsimError(
            f"no column {shown(column)} in {path}; its columns: {clipped(', '.join(header))}",
            key=key,
        )
    values, row, message = _check_tokens(_read(path, [column])[column])
    if row is not None:
        raise _row_error(path, row, column, message)
    values.setflags(write=False)
    return values


def _header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig") as f:
            for line in f:
                text = line.split("#", 1)[0].strip()
                if text:
                    return [c.strip() for c in text.split(",")]
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmsimError(f"cannot read file: {exc}", file=str(path)) from None
    raise LlmsimError("empty file: no header line", file=str(path))


def _detect(path: Path, header: list[str], fmt: str, need_arrivals: bool) -> str:
    has = set(header)
    azure, plain = set(AZURE_COLUMNS) <= has, set(PLAIN_COLUMNS) <= has
    pairs = {"prompt_tokens", "output_tokens"} <= has
    if fmt == "azure" and azure:
        return "azure"
    if fmt == "plain" and plain:
        return "plain"
    if fmt in ("plain", "auto") and not need_arrivals and pairs:
        return "lengths"
    if fmt == "auto" and azure:
        return "azure"
    if fmt == "auto" and plain:
        return "plain"
    expected = {
        "azure": ",".join(AZURE_COLUMNS),
        "plain": ",".join(PLAIN_COLUMNS),
        "auto": f"{','.join(PLAIN_COLUMNS)} (plain) or {','.join(AZURE_COLUMNS)} (azure)",
    }[fmt]
    if not need_arrivals and fmt != "azure":
        expected += " or prompt_tokens,output_tokens"
    raise LlmsimError(
        f"header {shown(','.join(header))} does not match the format; expected columns {expected}",
        file=str(path),
    )


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    # All columns are read, not just `columns`: with usecols pandas would silently
    # ignore a row with too many fields instead of reporting it.
    try:
        frame = pd.read_csv(
            path, comment="#", skipinitialspace=True, encoding="utf-8-sig", low_memory=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        text = str(exc).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
        if m:
            text = f"line {m[2]}: expected {m[1]} fields, saw {m[3]}"
        raise LlmsimError(f"malformed CSV: {text}", file=str(path)) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame[columns]


_Check = tuple[np.ndarray, int | None, str]


def _check_tokens(series: pd.Series) -> _Check:
    """Integers in [1, MAX_TOKENS]; returns (values, first bad row or None, what is
    wrong there). A count past the bound is an error, not a wrapped int64."""
    if pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
        raw = series.to_numpy()  # int64 or uint64: compared before any cast
        big = raw > MAX_TOKENS
        bad = (raw < 1) | big
        values = np.where(bad, 1, raw).astype(np.int64)
    else:
        num = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            big = num > MAX_TOKENS
            bad = ~np.isfinite(num) | (num < 1) | big | (num != np.floor(num))
        values = np.where(bad, 1, num).astype(np.int64)
    if not bad.any():
        return values, None, ""
    row = int(np.argmax(bad))
    expected = f"a token count <= {MAX_TOKENS:,}" if big[row] else "a positive integer"
    return values, row, _describe(series.iloc[row], expected)


def _check_times(series: pd.Series, azure: bool) -> _Check:
    if azure:
        stamps = pd.to_datetime(series, format="ISO8601", errors="coerce")
        bad = stamps.isna().to_numpy()
        seconds: np.ndarray = np.zeros(len(series))
        if not bad.any() and len(series):
            seconds = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy(dtype=np.float64)
        what = "a timestamp such as '2023-11-16 18:15:46.680590'"
    else:
        seconds = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(seconds) | (seconds < 0)
        what = "a number of seconds >= 0"
    if not bad.any():
        return seconds, None, ""
    row = int(np.argmax(bad))
    return seconds, row, _describe(series.iloc[row], what)


def _describe(raw: Any, expected: str) -> str:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)) or raw is pd.NA:
        return "missing value"
    value = raw.item() if isinstance(raw, np.generic) else raw
    return f"expected {expected}, got {shown(value)}"


def _row_error(path: Path, row: int, column: str, message: str) -> LlmsimError:
    return LlmsimError(f"line {_line_of(path, row)}: {column}: {message}", file=str(path))


def _line_of(path: Path, row: int) -> int:
    """The 1-based file line of data row `row`, counted as pandas counts them
    (comment-only and blank lines skipped, the header first). Only errors pay for it."""
    seen = -2  # the header is row -1
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if line.split("#", 1)[0].strip():
                seen += 1
                if seen == row:
                    return number
    return -1
