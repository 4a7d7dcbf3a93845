"""Sort more items than memory should hold: an external merge sort.

Items are gathered into runs of bounded size (items and estimated bytes); a run that is full is sorted
and written to a temporary file, and the runs are then merged (`heapq.merge`), at most MAX_FAN_IN at a
time, reading each a block at a time. When everything fits one run nothing is written. The result is
exactly `sorted(items)`: every run is sorted the same way and merging sorted runs keeps that order.
The temporary folder goes when the sort ends, is closed early, or fails.
"""
from __future__ import annotations

import heapq
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Default run bounds: what one run may hold in memory before it is sorted and spilled.
RUN_ITEMS = 100_000
RUN_BYTES = 32 * 1024 * 1024
#: Runs merged at once: each holds one block in memory while merging, and one open file.
MAX_FAN_IN = 64
#: Items per pickled block of a run file: the unit read back while merging.
BLOCK_ITEMS = 1024


def _write_run(items: list[Any], folder: Path, number: int) -> Path:
    path = folder / f"run-{number:06d}.pickle"
    with open(path, "wb") as handle:
        for start in range(0, len(items), BLOCK_ITEMS):
            pickle.dump(items[start:start + BLOCK_ITEMS], handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _read_run(path: Path) -> Iterator[Any]:
    """A run's items, a block at a time (the file is ours, written by _write_run in this sort)."""
    with open(path, "rb") as handle:
        while True:
            try:
                block = pickle.load(handle)  # noqa: S301 (our own temporary file)
            except EOFError:
                return
            yield from block


def _merge_runs(runs: list[Path], folder: Path, number: int) -> Iterator[Any]:
    """Merge `runs` (first into fewer, longer runs while there are more than MAX_FAN_IN of them)."""
    while len(runs) > MAX_FAN_IN:
        merged = []
        for start in range(0, len(runs), MAX_FAN_IN):
            group = runs[start:start + MAX_FAN_IN]
            path = folder / f"run-{number:06d}.pickle"
            number += 1
            with open(path, "wb") as handle:
                block: list[Any] = []
                for item in heapq.merge(*(_read_run(run) for run in group)):
                    block.append(item)
                    if len(block) == BLOCK_ITEMS:
                        pickle.dump(block, handle, protocol=pickle.HIGHEST_PROTOCOL)
                        block = []
                if block:
                    pickle.dump(block, handle, protocol=pickle.HIGHEST_PROTOCOL)
            for run in group:
                run.unlink()
            merged.append(path)
        runs = merged
    yield from heapq.merge(*(_read_run(run) for run in runs))


def spilling_sorted(items: Iterable[T], *, weigh: Callable[[T], int] | None = None, run_items: int = RUN_ITEMS,
                    run_bytes: int = RUN_BYTES, temp_dir: str | Path | None = None) -> Iterator[T]:
    """`sorted(items)`, one item at a time, holding at most one run (`run_items` items, or items that
    `weigh` estimates at `run_bytes` bytes) in memory; spilled runs go to a temporary folder under
    `temp_dir` (default: the system's), removed when the iteration ends or is closed."""
    if run_items < 1:
        raise ValueError("run_items must be at least 1")
    run: list[T] = []
    weight = 0
    runs: list[Path] = []
    folder: tempfile.TemporaryDirectory[str] | None = None
    try:
        for item in items:
            run.append(item)
            weight += weigh(item) if weigh is not None else 0
            if len(run) >= run_items or weight >= run_bytes:
                if folder is None:
                    folder = tempfile.TemporaryDirectory(prefix="vl2-sort-", dir=temp_dir)
                run.sort()
                runs.append(_write_run(run, Path(folder.name), len(runs)))
                run, weight = [], 0
        run.sort()
        if folder is None:  # everything fitted one run: nothing was written
            yield from run
            return
        if run:
            runs.append(_write_run(run, Path(folder.name), len(runs)))
        run = []
        yield from _merge_runs(runs, Path(folder.name), len(runs))
    finally:
        if folder is not None:
            folder.cleanup()
