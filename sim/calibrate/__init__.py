"""Calibration: measure a device's op times with PyTorch and fit cost curves to them.

- `profile`: the YAML schema of a calibration profile (measurements, fit, environment).
- `harness`: the microbenchmarks behind `llmsim calibrate` (needs the `calibrate` extra).
- `reference`: a small real decoder in PyTorch, to compare simulated and measured
  latencies of one model on one machine (needs the extra too).
- `fit`: shape-based curves fitted to measurements.

Importing this package costs nothing: PyTorch is imported only by `harness` and
`reference`, and `require_torch` turns its absence into one line of advice.
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
