"""The thread budget of one file's ingestion, and the helper threads that spend it.

Why threads help: PIL's resize, decord, PyAV and numpy release the GIL in their C code, so the frames
of one video can be resized on several cores and the audio track decoded while the video is. Why a
budget: inside `DecodePool` every worker is a process; `workers × threads` must not exceed the cores,
so each worker sets its share once (`set_media_threads`) and single-file calls default to the cores.
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

#: Cap on the default budget: a file has one audio track and at most a few dozen frames to resize,
#: so more threads than this stop paying for themselves.
MAX_DEFAULT_MEDIA_THREADS = 4

_configured_threads: int | None = None
_executors: dict[int, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()


def default_media_threads() -> int:
    """Threads one file may use when the caller does not say: the process setting, else the cores."""
    if _configured_threads is not None:
        return _configured_threads
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_MEDIA_THREADS))


def set_media_threads(threads: int | None) -> None:
    """Set this process's default budget (None: back to the number of cores). DecodePool workers call it."""
    global _configured_threads
    if threads is not None and threads < 1:
        raise ValueError("threads must be at least 1")
    _configured_threads = threads


def resolve_threads(threads: int | None) -> int:
    """An explicit budget, or the default one."""
    if threads is None:
        return default_media_threads()
    if threads < 1:
        raise ValueError("threads must be at least 1")
    return threads


def _helpers(size: int) -> ThreadPoolExecutor:
    """One long-lived helper pool per size, so a batch does not create threads per file."""
    with _executors_lock:
        executor = _executors.get(size)
        if executor is None:
            executor = _executors[size] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="vl2-media")
        return executor


def start_in_background(fn: Callable[[], T], threads: int) -> Future[T] | None:
    """Run `fn` on a helper thread when the budget allows one (threads ≥ 2); None means run it inline."""
    if threads < 2:
        return None
    return _helpers(threads - 1).submit(fn)


def for_each_index(count: int, work: Callable[[int], None], threads: int) -> None:
    """Call `work(i)` for i in range(count) on the caller plus up to `threads - 1` helper threads.

    Work is shared through one counter, so whichever thread is free takes the next item; helpers that
    never started (their pool was busy with something else) are cancelled rather than waited for.
    """
    helper_count = min(threads, count) - 1
    if helper_count <= 0:
        for index in range(count):
            work(index)
        return
    counter = itertools.count()  # next() on a count is atomic under the GIL

    def drain() -> None:
        for index in iter(counter.__next__, None):
            if index >= count:
                return
            work(index)

    executor = _helpers(threads - 1)
    futures = [executor.submit(drain) for _ in range(helper_count)]
    try:
        drain()
    finally:
        for future in futures:
            if not future.cancel():
                future.result()
