"""Decode worker processes that can be killed: a file that hangs or crashes its decoder costs that file.

Each worker handles one file at a time, so the parent always knows which file a worker is on and since
when. A worker past its deadline is killed and replaced (DecodeTimeoutError for that file); a worker
that dies (segfault, abort, os._exit) is replaced (DecoderCrashError). Results come back in input order
and at most `max_pending` files are in flight or waiting to be yielded, so memory does not grow with
the number of paths.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator

from vl2cli.errors import DecodeTimeoutError, DecoderCrashError, MediaError
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media
from vl2cli.media.parallel import set_media_threads

LoadFn = Callable[[str, MediaSpec], LoadedMedia]
#: forkserver: workers start from a clean process (no inherited torch/OpenMP thread state) and a
#: replacement worker forks from the server in milliseconds instead of re-importing torch.
_START_METHOD = "forkserver"
_PRELOAD_MODULES = ["vl2cli.media.loader"]
#: Seconds to wait for a worker to exit after asking it politely, before killing it.
_SHUTDOWN_GRACE_S = 2.0
#: In-flight files per worker when max_pending is not given (one decoding, one queued result).
_PENDING_PER_WORKER = 2


def _worker_main(conn: Connection, spec: MediaSpec, load_fn: LoadFn, threads: int) -> None:
    """Worker loop: receive (seq, path), send (seq, LoadedMedia | MediaError); None ends the loop."""
    import torch

    torch.set_num_threads(1)  # torch only casts here; the file's thread budget goes to decode/resize/audio
    set_media_threads(threads)
    while True:
        task = conn.recv()
        if task is None:
            return
        seq, path = task
        try:
            result: LoadedMedia | MediaError = load_fn(path, spec)
        except MediaError as exc:
            result = exc
        except Exception as exc:  # a decoder bug must cost this file only, reported as a media error
            result = MediaError(f"{path}: unexpected {type(exc).__name__} while decoding: {exc}", path=path)
        conn.send((seq, result))


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    task: tuple[int, str] | None = None
    deadline: float = 0.0


class DecodePool:
    """Context manager running `load_fn` over paths in worker processes, results in input order."""

    def __init__(self, spec: MediaSpec, *, workers: int = 2, timeout_s: float = 120.0,
                 max_pending: int | None = None, load_fn: LoadFn = load_media,
                 threads_per_worker: int | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if threads_per_worker is not None and threads_per_worker < 1:
            raise ValueError("threads_per_worker must be at least 1")
        #: each worker's media thread budget; by default the cores are shared so workers × threads ≤ cores
        self.threads_per_worker = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        self.spec, self.timeout_s, self.load_fn = spec, timeout_s, load_fn
        self.num_workers = workers
        self.max_pending = max(max_pending or workers * _PENDING_PER_WORKER, workers)
        self._ctx = mp.get_context(_START_METHOD)
        self._ctx.set_forkserver_preload(_PRELOAD_MODULES)
        self._workers: list[_Worker] = []
        self.restarts = 0

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "DecodePool":
        self._workers = [self._start_worker() for _ in range(self.num_workers)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self.spec, self.load_fn, self.threads_per_worker), daemon=True)
        process.start()
        child.close()
        return _Worker(process=process, conn=parent)

    def _kill(self, worker: _Worker) -> None:
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join()
        worker.conn.close()

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        self.restarts += 1
        self._workers[self._workers.index(worker)] = self._start_worker()

    def close(self) -> None:
        """Stop every worker (politely, then by force)."""
        for worker in self._workers:
            try:
                if worker.task is None:
                    worker.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + _SHUTDOWN_GRACE_S
        for worker in self._workers:
            worker.process.join(max(deadline - time.monotonic(), 0))
            self._kill(worker)
        self._workers = []

    # -------------------------------------------------------------- work
    def imap(self, paths: Iterable[str | Path]) -> Iterator[tuple[Path, LoadedMedia | MediaError]]:
        """Yield (path, LoadedMedia or MediaError) per path, in input order, never raising for one file."""
        if not self._workers:
            raise RuntimeError("use DecodePool as a context manager (with DecodePool(...) as pool)")
        source = iter(enumerate(Path(p) for p in paths))
        path_of: dict[int, Path] = {}
        done: dict[int, LoadedMedia | MediaError] = {}
        queued: list[tuple[int, str]] = []
        next_out, exhausted = 0, False
        while True:
            while not exhausted and len(path_of) < self.max_pending:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                seq, path = item
                path_of[seq] = path
                queued.append((seq, str(path)))
            self._dispatch(queued)
            while next_out in done:
                yield path_of.pop(next_out), done.pop(next_out)
                next_out += 1
            if exhausted and not path_of:
                return
            self._collect(done)

    def _dispatch(self, queued: list[tuple[int, str]]) -> None:
        for index, worker in enumerate(self._workers):
            if worker.task is not None or not queued:
                continue
            if not worker.process.is_alive():  # died after sending its last result
                self._replace(worker)
                worker = self._workers[index]
            worker.task = queued.pop(0)
            worker.deadline = time.monotonic() + self.timeout_s
            worker.conn.send(worker.task)

    def _collect(self, done: dict[int, LoadedMedia | MediaError]) -> None:
        """Wait for one event: a result, a dead worker, or the nearest deadline."""
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            return
        timeout = max(min(w.deadline for w in busy) - time.monotonic(), 0)
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=timeout)
        now = time.monotonic()
        for worker in busy:
            seq, path = worker.task
            if worker.conn in ready:
                try:
                    got_seq, result = worker.conn.recv()
                except (EOFError, OSError):
                    pass  # died while sending: handled as a crash below
                else:
                    if isinstance(result, MediaError) and result.path is None:
                        result.path = path
                    done[got_seq] = result
                    worker.task = None
                    continue
            if worker.process.sentinel in ready or not worker.process.is_alive():
                code = worker.process.exitcode
                done[seq] = DecoderCrashError(
                    f"{path}: the decoder process died (exit code {code}); the file was skipped", path=path)
                self._replace(worker)
            elif now >= worker.deadline:
                done[seq] = DecodeTimeoutError(
                    f"{path}: decoding took longer than {self.timeout_s:g} s; the decoder was stopped", path=path)
                self._replace(worker)
