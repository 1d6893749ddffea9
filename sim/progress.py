"""One progress bar for everything that takes a while: a long run, and the runs of a
comparison, a capacity search, a sweep or a policy search.

A bar draws on stderr, only on a terminal unless asked (`enabled=True`), and never for
a job too small to watch. Library code reports progress through it and never prints.
A job whose length is not known in advance (a capacity search) gives `total=None`: the
bar then counts what is done, and `describe` says which part is running.
"""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """`update(done)` moves the bar to `done` of `total` (None: not known in advance);
    `advance(steps)` moves it on (by one); `describe()` changes what it says beside the count;
    `close()` removes it. A bar that is off does nothing (and costs nothing)."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        enabled: bool | None = None,
        minimum: int = 1,
    ):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.total = total
        self._bar: Any = None
        self._every = 1 if total is None else max(1, total // 200)
        if enabled and (total is None or (total >= minimum and total > 0)):
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

    def describe(self, desc: str | None = None, postfix: str | None = None) -> None:
        """Say what is running (`desc`, before the count) and what just finished
        (`postfix`, after it); None leaves either as it is."""
        if self._bar is None:
            return
        if desc is not None:
            self._bar.set_description_str(desc, refresh=False)
        if postfix is not None:
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.refresh()  # the final count, even when it came within mininterval
            self._bar.close()
            self._bar = None
