"""Derive the shipped calibration profiles from Vidur's public CUDA measurements.

    python bench/derive_profiles.py [--data ../shared/data/calibration/vidur]

Writes hardware/calibration/{a100-80gb-sxm,h100-sxm,a40,a30}.yaml: fitted shape-based
curves only (no per-model tables), with the in-sample fit errors. The GEMM surface of a
device is a surface fitted to every GPU's points (each relative to its own roofline)
plus that GPU's own residual surface, so a GPU with few profiled models borrows the
shape of the efficiency landscape from the others. Attention was profiled only on the
A30 (FlashInfer); its efficiencies, relative to peak FLOP/s and bandwidth, are carried
to the other GPUs, and their profiles say so. Deterministic: re-runs write the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.calibrate.fit import fit_measurements, fit_surface, gemm_targets  # noqa: E402
from sim.calibrate.vidur import DEVICES, default_root, measurements, models_of  # noqa: E402
from sim.spec.catalog import load_device  # noqa: E402
from sim.spec.hardware import DeviceSpec  # noqa: E402
from sim.spec.profile import Fit, Measurements, Profile, Surface  # noqa: E402

DTYPE = "fp16"  # Vidur profiles in half precision (same peak as bf16 on these GPUs)
FABRICS = {
    "a100": ("a100_dgx", "a100_pairwise_nvlink"),
    "h100": ("h100_dgx", "h100_pairwise_nvlink"),
    "a40": ("a40_pairwise_nvlink",),
    "a30": ("a30_single_gpu",),
}
LOCAL_SMOOTHING = 3.0  # the per-GPU residual is smoother than the shared surface


def load_all(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, Measurements]:
    return {
        gpu: measurements(root, gpu, exclude_models=exclude, fabrics=FABRICS[gpu])
        for gpu in DEVICES
    }


def prior_surface(targets: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Surface:
    """One GEMM surface over several sets of `gemm_targets` (x, y, ok), each relative to
    its own roofline."""
    sets = list(targets)
    return fit_surface(
        np.concatenate([x[ok] for x, _, ok in sets]),
        np.concatenate([y[ok] for _, y, ok in sets]),
    )


def shared_prior(data: dict[str, Measurements]) -> Surface:
    """One GEMM surface over every GPU's points, each relative to its own roofline."""
    return prior_surface(
        gemm_targets(meas.gemm, load_device(DEVICES[gpu]), DTYPE) for gpu, meas in data.items()
    )


def fit_gpu(
    meas: Measurements, device: DeviceSpec, prior: Surface
) -> tuple[Fit, dict[str, dict[str, float]]]:
    """One GPU's curves: its GEMM surface is `prior` plus a smoother fit of its residual."""
    return fit_measurements(meas, device, DTYPE, gemm_prior=prior, gemm_smoothing=LOCAL_SMOOTHING)


def derive(root: Path, out: Path) -> list[Path]:
    data = load_all(root)
    prior = shared_prior(data)
    fits = {}
    for gpu, meas in data.items():
        fits[gpu] = fit_gpu(meas, load_device(DEVICES[gpu]), prior)
    carried = fits["a30"][0].attention
    written = []
    for gpu, (fit, quality) in fits.items():
        device = DEVICES[gpu]
        note = ""
        if fit.attention is None and carried is not None:
            note = (
                " Attention: efficiencies fitted on the A30 (FlashInfer), relative to "
                "peak FLOP/s and bandwidth, carried to this GPU (no attention data)."
            )
            fit = fit.model_copy(
                update={
                    "attention": carried.model_copy(
                        update={"source": "carried from the a30 profile (relative efficiency)"}
                    )
                }
            )
        models = models_of(root, gpu)  # sorted, one per mlp.csv
        profile = Profile(
            name=device,
            device=device,
            description=f"Fitted op-time curves for {device} from Vidur's PyTorch profiling.",
            source=(
                "Fitted by bench/derive_profiles.py from shared/data/calibration/vidur/"
                f"profiling (MIT, Microsoft): compute/{gpu}/*/mlp.csv for "
                f"{', '.join(models)}; network/{', '.join(FABRICS[gpu])}."
                " GEMM surface = shared surface over all four GPUs + this GPU's residual." + note
            ),
            dtype=DTYPE,
            fit=fit,
            quality=quality,
        )
        header = (
            f"# Calibration profile for {device}: fitted curves, written by "
            "bench/derive_profiles.py.\n# Derived from Vidur's public profiling data "
            "(MIT); see `source`. Do not edit by hand.\n"
        )
        written.append(_write(out / f"{device}.yaml", header, profile))
    written.append(_carry_h100_to_h200(out))
    return written


def _carry_h100_to_h200(out: Path) -> Path:
    """The H200 is the H100's GH100 die with faster, larger HBM: its fit is the H100's
    (efficiencies are relative to each device's own peak FLOP/s and bandwidth) and the
    HGX H200's NVSwitch is the DGX H100's."""
    h100 = Profile.model_validate(yaml.safe_load((out / "h100-sxm.yaml").read_text()))
    collectives = tuple(
        c.model_copy(update={"fabric": c.fabric.replace("dgx-h100", "hgx-h200")})
        for c in h100.fit.collectives
        if c.fabric.startswith("dgx-h100")
    )
    fit = h100.fit.model_copy(update={"collectives": collectives})
    profile = h100.model_copy(
        update={
            "name": "h200",
            "device": "h200",
            "description": "Fitted op-time curves for h200, carried from the h100-sxm profile.",
            "source": "Carried from hardware/calibration/h100-sxm.yaml by "
            "bench/derive_profiles.py: the H200 has the H100's GH100 compute (same SMs and "
            "tensor-core peaks) with HBM3e at 4.8 TB/s; the fitted efficiencies are relative "
            "to each device's peak FLOP/s and bandwidth, so they carry. No H200 was measured. "
            "H100 source: " + h100.source,
            "fit": fit,
        }
    )
    header = (
        "# Calibration profile for h200: the h100-sxm fit carried over, written by "
        "bench/derive_profiles.py.\n# See `source`. Do not edit by hand.\n"
    )
    return _write(out / "h200.yaml", header, profile)


def _write(path: Path, header: str, profile: Profile) -> Path:
    body = yaml.safe_dump(
        profile.model_dump(mode="json", exclude_none=True),
        sort_keys=False,
        width=100,
        default_flow_style=None,
    )
    path.write_text(header + body)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_root())
    ap.add_argument("--out", type=Path, default=ROOT / "hardware" / "calibration")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"no Vidur data at {args.data}", file=sys.stderr)
        return 2
    for path in derive(args.data, args.out):
        profile = Profile.model_validate(yaml.safe_load(path.read_text()))
        q = profile.quality.get("gemm", {})
        print(
            f"{path.relative_to(ROOT)}: GEMM fit median {q.get('median_abs_pct')}% "
            f"p90 {q.get('p90_abs_pct')}% over {q.get('points'):.0f} points "
            f"({q.get('dropped', 0):.0f} dropped as faster than the roofline)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
