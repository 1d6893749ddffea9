"""Power and energy of a run's devices, from their records and the catalog's power.

A device draws its idle power for the whole simulated time (0 to the last event: a
serving engine holds its devices from the start), and while busy (its stage's busy
time: kernels and the TP collectives inside the step) as much again as its
activity asks, up to peak:

    P_busy = idle + (peak − idle) × a,   a = min(1, max(c, m))

where c is the compute it did over what its derated roofline does in the busy time
(FLOPs ÷ (busy_s × peak FLOP/s × efficiency.compute)) and m the same for HBM bytes
(÷ (busy_s × bandwidth × efficiency.memory)): a device running well-shaped kernels flat
out draws its TDP, whichever unit bounds it. So

    E = idle × T + (peak − idle) × min(busy_s, max(FLOPs ÷ achieved FLOP/s,
                                                  HBM bytes ÷ achieved bytes/s))

Assumptions: power is linear in the busier unit's utilisation between the idle and the
TDP (no DVFS, power caps or thermal throttling); memory-bound work at full bandwidth is
taken to draw the TDP as compute-bound work does, an upper bound for decode (measured
decode draws less: Splitwise, Patel et al. 2024, sees almost no slowdown of the token
phase when capped from 700 to 350 W). Host CPUs, NICs, switches, cooling (PUE) are not
counted; a device without `power` in the catalog gets no energy, and then the run
reports none (`energy.devices_without_power` names them).
"""

from __future__ import annotations

from sim.spec.hardware import DeviceSpec


def active_seconds(
    device: DeviceSpec, peak_flops: float, busy_s: float, flops: float, hbm_bytes: float
) -> float:
    """The seconds of its busy time the device draws its TDP: its work's time at the
    derated roofline of its busier unit (compute at `peak_flops`, the run's compute dtype,
    or HBM), at most the busy time."""
    compute_s = flops / (peak_flops * device.efficiency.compute)
    memory_s = hbm_bytes / (device.memory_bandwidth_bytes_per_s * device.efficiency.memory)
    return min(busy_s, max(compute_s, memory_s))


def energy_joules(
    device: DeviceSpec,
    peak_flops: float,
    seconds: float,
    busy_s: float,
    flops: float,
    hbm_bytes: float,
) -> float | None:
    """Joules over `seconds` of simulated time (None without catalog power)."""
    power = device.power
    if power is None:
        return None
    active = active_seconds(device, peak_flops, busy_s, flops, hbm_bytes)
    return power.idle_watts * seconds + (power.peak_watts - power.idle_watts) * active
