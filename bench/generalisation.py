"""Leave-one-model-out: does the fitted cost kernel predict a model it never saw?

For every model in Vidur's public per-op profiles (../shared/data/calibration/vidur),
fit the curves without that model — on every GPU, so no trace of it remains — then
predict its ops for every token count and TP degree, and print the median and p90
absolute percentage error per GPU and op family. The fitting is exactly what
bench/derive_profiles.py ships: a GEMM surface shared by all GPUs plus a per-GPU
residual; stream curves per element-wise family. Target (issue 4): median <= 8% and
p90 <= 20% for the GEMMs.

    python bench/generalisation.py [--data PATH]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.derive_profiles import DTYPE, fit_gpu, prior_surface  # noqa: E402
from sim.calibrate.fit import (  # noqa: E402
    WRITE_PER_READ,
    elementwise_bytes,
    gemm_targets,
    surface_at,
)
from sim.calibrate.vidur import DEVICES, compute_points, default_root, models_of  # noqa: E402
from sim.cost.curves import stream_time  # noqa: E402
from sim.spec.catalog import load_device  # noqa: E402
from sim.spec.profile import Measurements  # noqa: E402
from sim.units import dtype_bytes  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_root())
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"no Vidur data at {args.data}", file=sys.stderr)
        return 2
    points = {}  # (gpu, model) -> (gemm points, element-wise points)
    for gpu in DEVICES:
        base = args.data / "profiling" / "compute" / gpu
        for model in models_of(args.data, gpu):
            points[(gpu, model)] = compute_points(base / model / "mlp.csv")
    models = sorted({m for _, m in points})
    targets = {}
    for (gpu, model), (gemms, _) in points.items():
        targets[(gpu, model)] = gemm_targets(gemms, load_device(DEVICES[gpu]), DTYPE)

    size = dtype_bytes(DTYPE)
    errors: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    for held in models:
        rest = [k for k in points if k[1] != held]
        prior = prior_surface(targets[k] for k in rest)
        for gpu in DEVICES:
            if (gpu, held) not in points:
                continue
            mine = [k for k in rest if k[0] == gpu]
            device = load_device(DEVICES[gpu])
            train = Measurements(
                gemm=tuple(p for k in mine for p in points[k][0]),
                elementwise=tuple(p for k in mine for p in points[k][1]),
            )
            fitted, _ = fit_gpu(train, device, prior)  # what derive_profiles.py ships
            assert fitted.gemm is not None
            xt, yt, ok = targets[(gpu, held)]
            pred = np.exp(surface_at(fitted.gemm.surface, xt[ok]))  # relative to the roofline
            errors[(gpu, "gemm")].append(np.abs(pred / np.exp(yt[ok]) - 1) * 100)
            bw = device.memory_bandwidth_bytes_per_s
            for family in WRITE_PER_READ:
                fit = getattr(fitted, family)
                test = [p for p in points[(gpu, held)][1] if p.op == family]
                if fit is None or not test:
                    continue
                moved = np.array([elementwise_bytes(p, size) for p in test])
                t = np.array([p.median_s for p in test])
                errors[(gpu, family)].append(np.abs(stream_time(fit, moved, bw) / t - 1) * 100)
        print(f"  left out {held}", file=sys.stderr, flush=True)

    print(f"{'gpu':<8}{'op family':<12}{'points':>8}{'median':>9}{'p90':>8}")
    for (gpu, family), errs in sorted(
        errors.items(), key=lambda kv: (kv[0][0], kv[0][1] != "gemm")
    ):
        e = np.concatenate(errs)
        print(f"{gpu:<8}{family:<12}{len(e):>8}{np.median(e):>8.1f}%{np.percentile(e, 90):>7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
