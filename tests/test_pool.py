"""sim.studies.pool: one pool for every study; results in order; workers that never
outlive the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim.errors import LlmsimError
from sim.studies.pool import Pool, check_jobs, default_jobs

ROOT = Path(__file__).resolve().parent.parent


def square(x: int) -> int:
    return x * x


def test_map_keeps_the_items_order_in_and_out_of_process():
    items = list(range(20))
    with Pool(1) as one, Pool(2) as two:
        assert one.map(square, items) == two.map(square, items) == [x * x for x in items]
        assert sorted(two.as_completed(square, items)) == [(i, i * i) for i in items]


def test_jobs_must_be_positive():
    with pytest.raises(LlmsimError, match="expected a positive number"):
        check_jobs(0)
    assert default_jobs(1) == 1


PARENT = """
import os, sys, time
from sim.studies.pool import Pool
with Pool(2) as pool:
    pool._pool(2).submit(time.sleep, 600)
    pool._pool(2).submit(time.sleep, 600)
    time.sleep(1)  # let the workers start
    print(" ".join(str(p) for p in pool._executor._processes), flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to see the workers")
def test_workers_exit_when_their_parent_is_killed():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(w) for w in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(600):  # up to a minute: only the outcome is asserted, not its speed
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers)
