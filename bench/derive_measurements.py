"""Derive the measurements `llmsim validate` checks, shipped inside the package
(`sim/fidelity/measurements.yaml`), from the developers' published-measurement file
(`../shared/data/measurements-dev.yaml`).

Every entry is kept as published, with its source; the file is rewritten as plain YAML
with a header saying where it came from, so that `llmsim validate` works for a user
without `../shared` and from an installed wheel.

    python bench/derive_measurements.py            # rewrite the shipped file
    python bench/derive_measurements.py --check    # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "measurements-dev.yaml"
SHIPPED = ROOT / "sim" / "fidelity" / "measurements.yaml"
HEADER = (
    "# Published measurements of real serving systems, each with its source, as\n"
    "# `llmsim validate` compares the simulator with them. Derived from the developers'\n"
    "# shared/data/measurements-dev.yaml by bench/derive_measurements.py (entries kept as\n"
    "# published; regenerate rather than edit).\n"
)


def derived(source: Path = SOURCE) -> str:
    data = yaml.safe_load(source.read_text())
    keep = {k: data[k] for k in ("schema", "note", "measurements") if k in data}
    return HEADER + yaml.safe_dump(keep, sort_keys=False, allow_unicode=True, width=100)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check the shipped file")
    args = ap.parse_args()
    text = derived()
    if args.check:
        same = SHIPPED.is_file() and SHIPPED.read_text() == text
        print("up to date" if same else f"{SHIPPED} is out of date: run without --check")
        return 0 if same else 1
    SHIPPED.write_text(text)
    print(f"wrote {SHIPPED} ({len(yaml.safe_load(text)['measurements'])} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
