"""What the commands share: the `--set` and `--progress` options, JSON printing, and
the exit status of bad input."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_BAD_INPUT = 2


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The `--set KEY=VALUE` option every scenario-taking command shares."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    """The `--progress auto|on|off` option of the commands that draw a progress bar."""
    p.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar on stderr (auto: only on a terminal)",
    )


def progress_flag(value: str) -> bool | None:
    """`--progress` as the library takes it: None (auto: only on a terminal), on, off."""
    return {"auto": None, "on": True, "off": False}[value]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))
