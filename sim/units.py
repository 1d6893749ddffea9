"""Units and number types: dtypes and their sizes, and parsing of sizes and rates.

One time base (seconds) and one size base (bytes) run through the code; YAML may say
`80 GB`, `2039 GB/s` or `1.5 us` and is converted here, once, at load.
"""

from __future__ import annotations

import re
from typing import Literal

DType = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4"]

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    # Block-scaled 4-bit floats (e2m1) carry their scales in their size: NVFP4 one fp8
    # (e4m3) scale per 16 values, MXFP4 (OCP MX) one e8m0 scale per 32 values.
    "nvfp4": 0.5 + 1 / 16,
    "mxfp4": 0.5 + 1 / 32,
}

# Which peak-FLOP/s entry of a device a matmul in a given weight dtype runs at, in order
# of preference. Weight-only int8/int4 on GPUs dequantise to the activation dtype, so
# the compute dtype is the activation dtype; this table is for the case where both the
# weights and activations are quantised.
COMPUTE_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "tf32": ("tf32", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "fp8": ("fp8", "fp16", "bf16", "fp32"),
    "int8": ("int8", "fp8", "fp16", "bf16", "fp32"),
    "int4": ("int4", "int8", "fp16", "bf16", "fp32"),
    # No fallback: a device without FP4 tensor cores cannot run FP4 matmuls.
    "nvfp4": ("nvfp4",),
    "mxfp4": ("mxfp4",),
}

# Compute dtypes a device must list in `peak_flops` (refused, not emulated, elsewhere).
STRICT_COMPUTE: tuple[str, ...] = ("nvfp4", "mxfp4")

KB, MB, GB, TB, PB = 1e3, 1e6, 1e9, 1e12, 1e15
KiB, MiB, GiB, TiB = 2.0**10, 2.0**20, 2.0**30, 2.0**40

_SIZE = {
    "b": 1.0,
    "kb": KB,
    "mb": MB,
    "gb": GB,
    "tb": TB,
    "pb": PB,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_RATE_BITS = {"gbps": 1e9 / 8, "gbit/s": 1e9 / 8, "tbps": 1e12 / 8, "mbps": 1e6 / 8}
_NUM = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPE_BYTES)}") from None


def parse_bytes(value: float | int | str) -> float:
    """`80GB`, `32 GiB`, `1.5e9` -> bytes (decimal units unless the unit says iB)."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(_NUM + r"\s*([A-Za-z]+)?", value.strip())
    if not m:
        raise ValueError(f"expected a size such as '80 GB' or '32 GiB', got {value!r}")
    unit = (m.group(2) or "b").lower()
    if unit not in _SIZE:
        raise ValueError(f"unknown size unit {m.group(2)!r} in {value!r}")
    return float(m.group(1)) * _SIZE[unit]


def parse_rate(value: float | int | str) -> float:
    """`2039 GB/s`, `400 Gbps`, `1.2 TB/s` -> bytes per second."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    m = re.fullmatch(_NUM + r"\s*([A-Za-z/]+)", text)
    if not m:
        raise ValueError(f"expected a rate such as '2039 GB/s' or '400 Gbps', got {value!r}")
    unit = m.group(2).lower()
    if unit in _RATE_BITS:
        return float(m.group(1)) * _RATE_BITS[unit]
    if unit.endswith("/s") and unit[:-2] in _SIZE:
        return float(m.group(1)) * _SIZE[unit[:-2]]
    raise ValueError(f"unknown rate unit {m.group(2)!r} in {value!r}")


def parse_seconds(value: float | int | str) -> float:
    """`1.5 us`, `2 ms`, `0.25` -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(_NUM + r"\s*([a-zµ]+)?", value.strip())
    if not m or (m.group(2) or "s") not in _TIME:
        raise ValueError(f"expected a duration such as '5 us' or '2 ms', got {value!r}")
    return float(m.group(1)) * _TIME[m.group(2) or "s"]


def parse_flops(value: float | int | str) -> float:
    """`312 TFLOPS`, `1979 TFLOP/s`, `130 TOPS` -> FLOP/s."""
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(_NUM + r"\s*([TGPM])?(?:FLOP/?S|OP/?S|FLOPS|OPS)", value.strip(), re.I)
    if not m:
        raise ValueError(f"expected a rate such as '312 TFLOPS', got {value!r}")
    scale = {"": 1.0, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15}[(m.group(2) or "").lower()]
    return float(m.group(1)) * scale
