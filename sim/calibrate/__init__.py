"""Calibration: measure a device's op times with PyTorch and fit cost curves to them.

- `harness`: `llmsim calibrate` end to end: run the microbenchmarks, fit, write the
  profile (its YAML schema is sim.spec.profile). Needs the `calibrate` extra, as do
  the modules it runs:
  - `grids`: the options, checked, and the grids of sizes one run measures;
  - `timing`: sampling one kernel, and keeping weights and KV caches out of the cache;
  - `gemm`, `attention`, `elementwise`, `copies` (launch overhead and host<->device
    copies), `collectives`: one family of microbenchmarks each;
  - `hf`: the ops as Hugging Face transformers' eager modules call them (--hf; needs
    transformers too);
  - `runtime`: the host time of a small decoder's step, eager and compiled, a kernel's
    eager launch and a CUDA graph's replay; and the runtime file made of them;
  - `environment`: the device a profile calibrates and the software that measured it.
- `reference`: a small real decoder in PyTorch, to compare simulated and measured
  latencies of one model on one machine (needs the extra too).
- `fit`: shape-based curves fitted to measurements.
- `vidur`: measurements read from Vidur's public profiling data.

Importing this package costs nothing: PyTorch is imported only by the harness's modules
and `reference`, and `require_torch` turns its absence into one line of advice.
"""

from __future__ import annotations

from types import ModuleType

from sim.errors import LlmsimError

INSTALL_HINT = (
    "PyTorch is not installed: pip install 'llmsim[calibrate]' "
    "(where a machine keeps its own torch wheel, pip install torch==2.13.0 first)"
)


def require_torch() -> ModuleType:
    """The `torch` module, or an LlmsimError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise LlmsimError(INSTALL_HINT) from None
    return torch
