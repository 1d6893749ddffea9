"""`make bench`: every benchmark, one after another, printing figures (never pass/fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = ["speed.py", "generalisation.py", "component_speed.py", "cpu_fidelity.py"]


def main() -> int:
    for name in BENCHMARKS:
        print(f"\n=== bench/{name}", flush=True)
        subprocess.run([sys.executable, str(HERE / name), *sys.argv[1:]], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
