"""The device a profile calibrates, and the environment that measured it.

`environment` records the device's name, driver and the software versions; the device
is the catalog's (named by --catalog-device, or on CUDA the one whose name or alias is
the GPU's) or one made from the measurements (`measured_device_spec`).

Assumptions: for a device the catalog lacks (every CPU), the peaks are the best this
run saw (the highest GEMM FLOP/s, the highest streamed bandwidth), so the fitted
efficiencies are relative to the measured peaks, not to a data sheet's.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import torch

from sim.calibrate.fit import elementwise_bytes, gemm_bytes
from sim.calibrate.grids import Run
from sim.errors import LlmsimError
from sim.spec.catalog import load_device
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import Environment, Measurements
from sim.units import dtype_bytes


def environment(run: Run) -> Environment:
    """The device's identity and the software that measured it."""
    if run.is_cuda:
        name = torch.cuda.get_device_name(run.device)
        driver = _nvidia_smi_driver(run.device.index or 0)
    else:
        name = _cpu_model()
        driver = f"{platform.system()} {platform.release()}"
    return Environment(
        device_name=name,
        driver=driver,
        cuda=torch.version.cuda or "",
        torch=str(torch.__version__),
        python=platform.python_version(),
        transformers=_transformers_version() if run.options.hf else "",
        host=socket.gethostname(),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _transformers_version() -> str:
    try:
        from importlib.metadata import version

        return version("transformers")
    except Exception:  # not installed: the hf family said so already
        return ""


def _nvidia_smi_driver(index: int) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"-i={index}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes(run: Run) -> float:
    if run.is_cuda:
        return float(torch.cuda.get_device_properties(run.device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9


def measured_device_spec(
    name: str, kind: str, measurements: Measurements, dtype_name: str, memory_bytes: float
) -> DeviceSpec:
    """A device whose peaks are the best this run saw: the highest GEMM FLOP/s and the
    highest streamed bandwidth (GEMM weights and element-wise ops). For a device the
    catalog lacks (every CPU), the fit measures efficiencies against these."""
    esize = dtype_bytes(dtype_name)
    flops = max((2.0 * p.m * p.n * p.k / p.median_s for p in measurements.gemm), default=1e9)
    bandwidth = max(
        [gemm_bytes(p.m, p.n, p.k, esize, esize) / p.median_s for p in measurements.gemm]
        + [elementwise_bytes(p, esize) / p.median_s for p in measurements.elementwise],
        default=1e9,
    )
    return DeviceSpec.model_validate(
        {
            "name": name,
            "kind": kind,
            "description": "peaks derived from its own calibration measurements",
            "peak_flops": {dtype_name: flops},
            "memory_bytes": memory_bytes,
            "memory_bandwidth": bandwidth,
            "launch_overhead": measurements.launch_s or 0.0,
            "efficiency": {"compute": 1.0, "memory": 1.0},
            "sources": {
                "peak_flops": "the highest GEMM FLOP/s measured by llmsim calibrate",
                "memory_bandwidth": "the highest streamed bytes/s measured by llmsim calibrate",
            },
        }
    )


def profile_device(run: Run, measurements: Measurements) -> tuple[DeviceSpec, bool]:
    """The device the profile calibrates, and whether it comes from the catalog: the one
    named by --catalog-device; on CUDA the catalog device whose name or alias is the
    GPU's name; otherwise one made from the measurements, named `cpu-calibrated` or
    after the GPU."""
    if run.catalog_device is not None:
        return run.catalog_device, True
    if run.is_cuda:
        gpu = torch.cuda.get_device_name(run.device)
        try:
            return load_device(gpu), True
        except LlmsimError:
            name = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
            kind = "gpu"
    else:
        name, kind = "cpu-calibrated", "cpu"
    spec = measured_device_spec(name, kind, measurements, run.dtype_name, _memory_bytes(run))
    return spec, False
