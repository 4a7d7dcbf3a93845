"""Counting the inputs' files ahead of the run's lazy walk, so the progress line has a total (and an ETA)
from the start instead of from when the walk ends.

The run itself stays lazy: its walk yields the first file at once and holds only the folders on the
way down. This count is a second, separate pass over the same folders with the same rules, in a
thread, bounded in files and in time: on a huge or slow archive it gives up and the total is shown
when the run's own walk ends, as before.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from time import monotonic

from ..discover import WalkOptions
from ..errors import Vl2Error

#: Files counted at most; past it the total waits for the run's own walk.
COUNT_AHEAD_MAX_FILES = 200_000
#: Seconds the count may take; past them it gives up (a network share walked twice is not cheap).
COUNT_AHEAD_SECONDS = 10.0


class CountAhead:
    """Counts in a daemon thread; `on_count(n)` hears the total once, if it is counted within the bounds."""

    def __init__(self, inputs: Sequence[Path], *, walk: WalkOptions, on_count: Callable[[int], None],
                 max_files: int = COUNT_AHEAD_MAX_FILES, seconds: float = COUNT_AHEAD_SECONDS) -> None:
        self.inputs, self.on_count = list(inputs), on_count
        self.walk = walk  # the run's own: the count walks by the same rules
        self.max_files, self.seconds = max_files, seconds
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._count, name="vl2-count-ahead", daemon=True)
        #: the whole count, once it finished within its bounds (None: still counting, or gave up)
        self.total: int | None = None

    def start(self) -> "CountAhead":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _count(self) -> None:
        deadline = monotonic() + self.seconds
        count = 0
        try:
            for _ in self.walk.iter_paths(self.inputs):
                count += 1
                if self.stopped.is_set() or count > self.max_files or monotonic() > deadline:
                    return
        except (Vl2Error, OSError):  # the run's own walk reports what is wrong with the inputs
            return
        self.total = count
        if not self.stopped.is_set():
            self.on_count(count)


__all__ = ["COUNT_AHEAD_MAX_FILES", "COUNT_AHEAD_SECONDS", "CountAhead"]
