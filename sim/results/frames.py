"""Per-device and per-link frames of a run, from its records.

A device row: the busy time, communication share, FLOPs and HBM bytes of its stage (each
device of a TP group does the same), so utilisation, MFU (model FLOPs over span × peak
FLOP/s) and bandwidth utilisation; and its memory: weights, workspace and the KV cache
at the replica's peak; its energy and mean power (sim.results.energy; NaN for a device
without catalog power). A link row: the seconds it was held (transfers, KV moves,
offload streams) or busy with its TP group's collectives.
"""

from __future__ import annotations

import pandas as pd

from sim.engine.records import RunRecords
from sim.results.energy import energy_joules


def device_frame(run: RunRecords) -> pd.DataFrame:
    """One row per device in use: busy time, utilisation, MFU, bandwidth use, memory,
    energy."""
    d = run.deployment
    end_s = run.duration_s
    precision = d.precision
    block_size = d.scenario.scheduler.policy_params().block_size
    usage = {(st.replica, st.stage): st for st in run.stages}
    rows = []
    for rep, peak_blocks in zip(d.replicas, run.kv_peak_blocks, strict=True):
        device, sizes = rep.device, rep.memory
        peak = device.flops(precision.compute_dtype)
        for stage in rep.stages:
            used = usage[(rep.index, stage.index)]
            kv_peak = peak_blocks * block_size * sizes.kv_bytes_per_token[stage.index]
            if rep.offload is not None:  # the placement's GPU share is in weight_bytes
                kv_peak = 0.0
            joules = energy_joules(device, peak, end_s, used.busy_s, used.flops, used.bytes)
            for dev in stage.devices:
                rows.append(
                    {
                        "device": dev,
                        "replica": rep.index,
                        "role": rep.role,
                        "kind": device.name,
                        "stage": stage.index,
                        "busy_s": used.busy_s,
                        "comm_s": used.comm_s,
                        "utilization": used.busy_s / end_s if end_s > 0 else 0.0,
                        "flops": used.flops,
                        "model_flops": used.model_flops,
                        "mfu": used.model_flops / (end_s * peak) if end_s > 0 else 0.0,
                        "hfu": used.flops / (end_s * peak) if end_s > 0 else 0.0,
                        "hbm_bytes": used.bytes,
                        "mbu": used.bytes / (end_s * device.memory_bandwidth_bytes_per_s)
                        if end_s > 0
                        else 0.0,
                        "weight_bytes": sizes.weight_bytes[stage.index],
                        "workspace_bytes": sizes.workspace_bytes,
                        "kv_bytes_peak": kv_peak,
                        "memory_bytes_peak": sizes.weight_bytes[stage.index]
                        + sizes.workspace_bytes
                        + kv_peak,
                        "memory_bytes": device.memory_bytes,
                        "energy_j": float("nan") if joules is None else joules,
                        "power_w": float("nan") if joules is None or end_s <= 0 else joules / end_s,
                    }
                )
    return pd.DataFrame(rows)


def link_frame(run: RunRecords) -> pd.DataFrame:
    """One row per directed link that carried traffic: busy seconds and utilisation.
    TP all-reduces occupy the links of their ring for the stage's communication time."""
    end_s = run.duration_s
    d = run.deployment
    busy: dict[tuple[str, str], float] = dict(run.link_busy)
    usage = {(st.replica, st.stage): st for st in run.stages}
    for rep in d.replicas:
        for stage in rep.stages:
            comm = usage[(rep.index, stage.index)].comm_s
            if comm <= 0:
                continue
            for edge in stage.links:
                busy[edge] = busy.get(edge, 0.0) + comm
    rows = [
        {
            "link": f"{u}->{v}",
            "kind": d.links[(u, v)].kind if (u, v) in d.links else "",
            "busy_s": b,
            "utilization": b / end_s if end_s > 0 else 0.0,
        }
        for (u, v), b in sorted(busy.items())
    ]
    return pd.DataFrame(rows, columns=["link", "kind", "busy_s", "utilization"])
