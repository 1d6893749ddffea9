"""What an installed llmsim carries and shows: every catalog folder inside the wheel, the
licence, the version, and the public API as functions."""

from __future__ import annotations

import importlib
import pydoc
import tomllib
from importlib.metadata import version
from pathlib import Path

from sim.spec.catalog import KINDS
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_wheel_carries_every_catalog_folder_where_the_catalog_looks():
    included = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for folder in {k.split("/")[0] for k in KINDS.values()}:
        assert (ROOT / folder).is_dir(), folder
        assert included.get(folder) == f"sim/_catalog/{folder}", folder


def test_the_licence_ships():
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert "MIT" in (ROOT / "LICENSE").read_text()


def test_version_is_the_distributions(capsys):
    try:
        run_cli(capsys, "--version")
    except SystemExit as exc:  # argparse's version action exits 0
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"llmsim {version('llmsim')}"


def test_the_public_api_stays_functions_after_submodules_load():
    import sim

    importlib.import_module("sim.plan.analyze")  # a submodule named like a function
    for name in sim.__all__:
        assert callable(getattr(sim, name)), name
    text = pydoc.render_doc(sim, renderer=pydoc.plaintext)
    assert all(name in text for name in ("load_scenario", "simulate", "analyze"))
