"""Collective microbenchmarks: NCCL over torch.distributed among the GPUs of one host.

One process per GPU (torch.multiprocessing), ranks 0..n-1 of them taking part for each
group size n: all-reduce, all-gather, reduce-scatter and all-to-all over the grid's
message sizes, and send/recv between two. The intra-node fabric is read from
`nvidia-smi topo -m`. gloo on the CPU runs the same path, for tests.

Assumptions: one host (no inter-node network); samples are aligned across ranks by an
all-reduce and each is the slowest rank's time, as a collective finishes when its last
rank does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sim.calibrate.grids import DTYPES, MiB
from sim.calibrate.timing import Stats, elapsed_s, stats, sync, timing
from sim.spec.profile import CollectivePoint

COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


@dataclass(frozen=True)
class CollectiveJob:
    """What each spawned rank measures (picklable: it crosses into the children)."""

    backend: str  # nccl; gloo on CPU for tests
    world: int
    counts: tuple[int, ...]  # group sizes n: ranks 0..n-1 take part
    sizes: tuple[int, ...]  # bytes
    dtype_name: str
    warmup: int
    repeats: int
    port: int
    out: str
    fabric: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def detect_fabric(count: int) -> str:
    """The intra-node fabric of GPUs 0..count-1 from `nvidia-smi topo -m`, as a
    sim.spec.hardware fabric kind; "" when it cannot be told. All pairs on NVLink is read
    as an NVSwitch from 8 GPUs up and as a mesh below (HGX boards of 4 are meshes)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    rows = [line.split() for line in out.splitlines() if re.match(r"GPU\d+\s", line)]
    links = [
        row[1 + j]
        for i, row in enumerate(rows[:count])
        for j in range(count)
        if j != i and len(row) > count
    ]
    if not links:
        return ""
    nvlink = [link.startswith("NV") for link in links]
    if all(nvlink):
        return "nvswitch" if count >= 8 else "nvlink-mesh"
    return "nvlink-pairs" if any(nvlink) else "pcie"


def _collective_fn(
    op: str, n: int, size: int, group: Any, device: torch.device, dtype: torch.dtype, rank: int
) -> tuple[Callable[[], object], int]:
    """One call of `op` over `size` bytes (rounded to whole elements per rank), and the
    bytes it moves: the all-reduced tensor, the gathered output, the scattered input,
    one rank's all-to-all buffer, the message sent."""
    import torch.distributed as dist  # optional: absent from some torch builds

    esize = torch.empty((), dtype=dtype).element_size()
    elems = max(n, size // esize // n * n)

    def buf(count: int) -> torch.Tensor:
        return torch.randn(count, device=device).to(dtype)

    if op == "all_reduce":
        t = buf(elems)
        return (lambda: dist.all_reduce(t, group=group)), elems * esize
    if op == "all_gather":
        inp, out = buf(elems // n), buf(elems)
        return (lambda: dist.all_gather_into_tensor(out, inp, group=group)), elems * esize
    if op == "reduce_scatter":
        inp, out = buf(elems), buf(elems // n)
        return (lambda: dist.reduce_scatter_tensor(out, inp, group=group)), elems * esize
    if op == "all_to_all":
        inp, out = buf(elems), buf(elems)
        return (lambda: dist.all_to_all_single(out, inp, group=group)), elems * esize
    if op == "send_recv":
        t = buf(elems)
        if rank == 0:
            return (lambda: dist.send(t, dst=1)), elems * esize
        return (lambda: dist.recv(t, src=0)), elems * esize
    raise ValueError(f"unknown collective {op!r}")


def _time_collective(
    fn: Callable[[], object], size: int, group: Any, device: torch.device, job: CollectiveJob
) -> Stats:
    """Samples aligned by a group-wide all-reduce; each sample the slowest rank's time."""
    import torch.distributed as dist  # optional: absent from some torch builds

    flag = torch.zeros(1, device=device)
    calls = max(1, min(20, (4 * MiB) // size))
    for _ in range(job.warmup):
        fn()
    samples = []
    for _ in range(job.repeats):
        dist.all_reduce(flag, group=group)
        sync(device)
        samples.append(elapsed_s(fn, device, calls) / calls)
    worst = torch.tensor(samples, dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return stats(worst.cpu().numpy())


def _collective_worker(rank: int, job: CollectiveJob) -> None:
    """One rank of the collective benchmark; rank 0 writes the points as JSON."""
    import torch.distributed as dist  # optional: absent from some torch builds

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(job.port)
    if job.backend == "nccl":
        torch.cuda.set_device(rank)
        device, dtype = torch.device("cuda", rank), DTYPES[job.dtype_name]
    else:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        device, dtype = torch.device("cpu"), torch.float32
    dist.init_process_group(
        job.backend, rank=rank, world_size=job.world, timeout=dt.timedelta(minutes=10)
    )
    rows: list[dict[str, Any]] = []
    try:
        for n in job.counts:
            group = dist.new_group(list(range(n)))
            ops = (*COLLECTIVE_OPS, "send_recv") if n == 2 else COLLECTIVE_OPS
            for op in ops:
                if rank >= n:
                    continue
                for size in job.sizes:
                    try:
                        fn, moved = _collective_fn(op, n, size, group, device, dtype, rank)
                        fn()
                    except RuntimeError:  # an op this backend lacks (gloo): on every rank
                        break
                    stats = _time_collective(fn, moved, group, device, job)
                    rows.append(
                        {"op": op, "n_devices": n, "bytes": moved, "fabric": job.fabric}
                        | timing(stats)
                    )
            dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(job.out).write_text(json.dumps(rows))


def measure_collectives(
    *,
    world: int,
    sizes: Iterable[int],
    counts: Iterable[int] | None = None,
    backend: str = "nccl",
    dtype_name: str = "bf16",
    warmup: int = 5,
    repeats: int = 20,
    fabric: str | None = None,
) -> list[CollectivePoint]:
    """Collectives among ranks 0..n-1 of `world` processes on this host, for each n in
    `counts` (default 2..world): NCCL on GPUs 0..world-1, or gloo on the CPU."""
    import torch.multiprocessing as mp  # optional: only collectives spawn ranks

    fd, out = tempfile.mkstemp(suffix=".json", prefix="llmsim-collectives-")
    os.close(fd)
    job = CollectiveJob(
        backend=backend,
        world=world,
        counts=tuple(counts) if counts is not None else tuple(range(2, world + 1)),
        sizes=tuple(sizes),
        dtype_name=dtype_name,
        warmup=warmup,
        repeats=repeats,
        port=_free_port(),
        out=out,
        fabric=detect_fabric(world) if fabric is None else fabric,
    )
    try:
        mp.spawn(_collective_worker, args=(job,), nprocs=world, join=True)
        rows = json.loads(Path(out).read_text() or "[]")
    finally:
        Path(out).unlink(missing_ok=True)
    return [CollectivePoint.model_validate(row) for row in rows]
