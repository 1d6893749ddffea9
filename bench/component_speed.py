"""Speed of the pieces the tests exercise but no longer time: workload generation, trace
loading and `llmsim calibrate --quick`.

The tests assert what these produce, never how fast (a busy machine is slow, and a
wall-clock threshold fails there for no fault of the code). The figures live here and
are printed, never judged. Each timing is quoted against a baseline measured in the
same run on the same machine, so the ratio means something on any machine:

- workload: `generate` of 1,000,000 requests (gamma arrivals, lognormal prompts, Zipf
  outputs) against numpy drawing the same numbers of raw gamma, lognormal and Zipf
  variates (the floor any generator pays). Best of `--repeats`.
- traces: `load_trace` of each full Azure 2023 trace (../shared/data/traces, when
  present; a fresh copy each time, as it caches by path) against pandas.read_csv of
  the same file. Best of `--repeats`.
- calibrate: one `llmsim calibrate --device cpu --quick --threads 1` (when PyTorch is
  installed): its wall time and each measured family's share of it.

    python bench/component_speed.py [--repeats 3] [--skip-calibrate]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.spec.workload import parse_workload  # noqa: E402
from sim.workload.arrivals import generate  # noqa: E402
from sim.workload.traces import load_trace  # noqa: E402

SHARED_TRACES = ROOT.parent / "shared" / "data" / "traces"
N = 1_000_000


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` calls, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def workload(repeats: int) -> None:
    spec = parse_workload(
        {
            "requests": N,
            "arrival": {"process": "gamma", "rate": 10, "cv": 2},
            "prompt": {"dist": "lognormal", "median": 512, "sigma": 0.8, "max": 4096},
            "output": {"dist": "zipf", "a": 1.2, "max": 2048},
        },
        "bench.yaml",
        base_dir=ROOT,
    )
    rng = np.random.default_rng(1)

    def raw() -> None:
        rng.gamma(0.25, 0.4, N)
        rng.lognormal(np.log(512), 0.8, N)
        rng.zipf(1.2, N)

    ours = best_of(lambda: generate(spec, 1, ROOT), repeats)
    floor = best_of(raw, repeats)
    print(
        f"workload: generate({N:,} requests) {ours:.3f} s; numpy raw draws {floor:.3f} s; "
        f"ratio {ours / floor:.1f}x; {N / ours / 1e6:.2f} M requests/s"
    )


def traces(repeats: int) -> None:
    import pandas as pd

    for name in ("conv", "code"):
        path = SHARED_TRACES / f"AzureLLMInferenceTrace_{name}.csv"
        if not path.is_file():
            print(f"traces: {path} is not here; skipped")
            continue
        rows = len(load_trace(path))  # also the warm-up (imports)
        with tempfile.TemporaryDirectory() as tmp:
            # load_trace caches by path: each timed call reads a fresh copy.
            copies = [Path(tmp) / f"{i}-{path.name}" for i in range(max(1, repeats))]
            for copy in copies:
                shutil.copyfile(path, copy)
            ours = []
            for copy in copies:
                t0 = time.perf_counter()
                load_trace(copy)
                ours.append(time.perf_counter() - t0)
        floor = best_of(lambda p=path: pd.read_csv(p), repeats)
        print(
            f"traces: load_trace({path.name}, {rows:,} rows) {min(ours):.3f} s; "
            f"pandas.read_csv {floor:.3f} s; ratio {min(ours) / floor:.2f}x"
        )


FAMILY = re.compile(r"calibrate: (\w+): (\d+) point\(s\) in ([\d.]+) s")


def calibrate() -> None:
    try:
        import torch  # noqa: F401  (optional: the calibrate extra)
    except ImportError:
        print("calibrate: PyTorch is not installed (the calibrate extra); skipped")
        return
    from sim.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        err = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(
                [
                    "calibrate",
                    *("--device", "cpu", "--quick", "--threads", "1"),
                    *("--out", str(Path(tmp) / "p.yaml")),
                ]
            )
        wall = time.perf_counter() - t0
    if code != 0:
        print(f"calibrate: failed (exit {code}):\n{err.getvalue()[-2000:]}")
        return
    families = FAMILY.findall(err.getvalue())
    shares = ", ".join(
        f"{name} {int(points)} pts {float(s) / wall:.0%}" for name, points, s in families
    )
    print(f"calibrate --quick: {wall:.1f} s wall ({shares}; the rest is start-up and fit)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    ap.add_argument("--skip-calibrate", action="store_true")
    args, _ = ap.parse_known_args()  # bench/run_all.py passes every script its options
    workload(args.repeats)
    traces(args.repeats)
    if not args.skip_calibrate:
        calibrate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
