"""`llmsim`: the command line. One module per command (`setup` adds its parser, `run`
carries it out); this one builds the parser and runs the command asked for.

Bad input of any kind ends in one line on stderr naming the file, the key and what was
expected, and exit status 2; nothing here prints a traceback for a user's mistake.
Command modules import the library inside `run`, so `llmsim --help` and `llmsim
catalog` start without loading pandas, SimPy or matplotlib.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from sim.cli import (
    analyze,
    calibrate,
    capacity,
    catalog,
    compare,
    offload,
    run,
    sweep,
    validate,
)
from sim.cli.options import EXIT_BAD_INPUT
from sim.errors import LlmsimError

COMMANDS = (run, analyze, compare, capacity, sweep, validate, calibrate, offload, catalog)


def _version() -> str:
    try:
        return version("llmsim")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmsim",
        description="A discrete-event simulator of LLM inference clusters.",
    )
    parser.add_argument("--version", action="version", version=f"llmsim {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.setup(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        code: int = ns.func(ns)
        return code
    except LlmsimError as exc:
        print(f"llmsim: error: {exc.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("llmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `llmsim ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
