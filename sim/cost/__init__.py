"""The cost kernel: seconds for an op, a collective, or a whole pipeline stage.

`OpKernel` is the interface (`op_time(op, work)`); the roofline kernel prices from peak
FLOP/s and bandwidth, the calibrated kernel from measured profiles
(sim.plan.kernels picks one for a device). Both are
held to the physical roofline: no op is ever priced faster than max(FLOPs / peak,
bytes / bandwidth).
"""

from __future__ import annotations

from sim.cost.calibrated import CalibratedKernel
from sim.cost.collectives import CollectiveModel
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.cost.stage import StageCost

__all__ = [
    "CalibratedKernel",
    "CollectiveModel",
    "OpKernel",
    "RooflineKernel",
    "StageCost",
]
