"""Which cost kernel prices a device's ops: its calibration profile when it has one
(`engine.cost: auto`), always the roofline, or a profile required (`calibrated`)."""

from __future__ import annotations

from sim.arith.precision import Precision
from sim.cost.calibrated import CalibratedKernel
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.errors import LlmsimError
from sim.spec.catalog import profile_for
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import Profile


def make_kernel(
    device: DeviceSpec, precision: Precision, mode: str = "auto"
) -> tuple[OpKernel, Profile | None]:
    """The kernel a run uses: `calibrated` needs a profile for the device; `auto` uses
    one when the device has it and the roofline otherwise."""
    profile = profile_for(device) if mode != "roofline" else None
    if profile is None:
        if mode == "calibrated":
            raise LlmsimError(
                f"device {device.name} has no calibration profile in hardware/calibration/",
                key="engine.cost",
            )
        return RooflineKernel(device, precision), None
    return CalibratedKernel(device, precision, profile), profile
