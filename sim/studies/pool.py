"""One process pool for every study: the variants of a comparison, the seeds and loads
of a capacity search, the tasks of a sweep, the policies an offload search simulates.

`jobs=1` runs everything in this process, in order. Otherwise a pool of `jobs` worker
processes runs module-level functions (they must pickle); results come back in the
items' order (`map`) or as each finishes (`as_completed`), and a run is as
deterministic as `simulate` itself, whatever the order. A worker watches the process
that started it and exits when that process is gone, so a killed study (SIGKILL
included) leaves no worker blocked on an empty queue.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from types import TracebackType
from typing import TypeVar

from sim.errors import LlmsimError

T = TypeVar("T")
R = TypeVar("R")
PARENT_CHECK_S = 0.5  # how often a worker looks for its parent


def default_jobs(n_items: int) -> int:
    """As many workers as CPUs this process may use, but no more than there are items."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, n_items))


def check_jobs(jobs: int | None, key: str = "--jobs") -> None:
    """A worker count is positive (None: the default); errors name `key`."""
    if jobs is not None and jobs < 1:
        raise LlmsimError(f"expected a positive number (got {jobs})", key=key)


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker when the process that made it is gone (its
    parent id changes when it dies, whatever killed it)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="llmsim-parent-watch", daemon=True).start()


class Pool:
    """`jobs` worker processes, started on first use and shared by every call until the
    pool is closed (a capacity search runs many probes on one pool)."""

    def __init__(self, jobs: int = 1):
        check_jobs(jobs, "jobs")
        self.jobs = jobs
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(cancel=kind is not None)

    def _pool(self, n_items: int) -> ProcessPoolExecutor | None:
        if self.jobs == 1 or (n_items <= 1 and self._executor is None):
            return None
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.jobs, initializer=_exit_with_parent, initargs=(os.getpid(),)
            )
        return self._executor

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`fn` of every item, in the items' order."""
        pool = self._pool(len(items))
        if pool is None:
            return [fn(item) for item in items]
        return list(pool.map(fn, items))

    def as_completed(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, R]]:
        """`(index, fn(item))` as each call finishes (in order when in this process)."""
        pool = self._pool(len(items))
        if pool is None:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        futures: dict[Future[R], int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self, cancel: bool = False) -> None:
        """Wait for the calls running; `cancel` drops those not yet started."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None
