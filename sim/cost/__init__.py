"""The cost kernel: seconds for an op, a collective, or a whole pipeline stage.

`OpKernel` is the interface (`op_time(op, work)`); the roofline kernel prices from peak
FLOP/s and bandwidth, the calibrated kernel (issue 4) from measured profiles. Both are
held to the physical roofline: no op is ever priced faster than max(FLOPs / peak,
bytes / bandwidth).
"""

from __future__ import annotations

from sim.arith.ops import Precision
from sim.cost.calibrated import CalibratedKernel
from sim.cost.collectives import CollectiveModel
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.cost.stage import StageCost
from sim.errors import LlmsimError
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import Profile

__all__ = [
    "CalibratedKernel",
    "CollectiveModel",
    "OpKernel",
    "RooflineKernel",
    "StageCost",
    "make_kernel",
]


def make_kernel(
    device: DeviceSpec, precision: Precision, mode: str = "auto"
) -> tuple[OpKernel, Profile | None]:
    """The kernel a run uses: `calibrated` needs a profile for the device; `auto` uses
    one when the device has it and the roofline otherwise."""
    from sim.spec.catalog import profile_for

    profile = profile_for(device) if mode != "roofline" else None
    if profile is None:
        if mode == "calibrated":
            raise LlmsimError(
                f"device {device.name} has no calibration profile in hardware/calibration/",
                key="engine.cost",
            )
        return RooflineKernel(device, precision), None
    return CalibratedKernel(device, precision, profile), profile
