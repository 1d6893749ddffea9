"""One progress bar for everything that takes a while: a long run, and the runs of a
comparison, a capacity search, a sweep or a policy search.

A bar draws on stderr, only on a terminal unless asked (`enabled=True`), and never for
a job too small to watch. Library code reports progress through it and never prints.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """`update(done)` moves the bar to `done` of `total`; `close()` removes it. A bar
    that is off does nothing (and costs nothing)."""

    def __init__(
        self, total: int, desc: str, unit: str, enabled: bool | None = None, minimum: int = 1
    ):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.total = total
        self._bar: Any = None
        self._every = max(1, total // 200)
        if enabled and total >= minimum and total > 0:
            from tqdm import tqdm  # imported when a bar is drawn: start-up stays light

            self._bar = tqdm(total=total, unit=unit, desc=desc, leave=False, file=sys.stderr)

    @property
    def on(self) -> bool:
        return self._bar is not None

    def update(self, done: int) -> None:
        if self._bar is not None and (done % self._every == 0 or done == self.total):
            self._bar.update(done - self._bar.n)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
