"""Running `llmsim` in-process from a test: exit status, stdout and stderr."""

from __future__ import annotations

import pytest

from sim.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
