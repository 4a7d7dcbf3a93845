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
import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Generic, Iterable, Iterator, TypeVar

from vl2cli.errors import DecodeTimeoutError, DecoderCrashError, MediaError
from vl2cli.media.loader import Clip, LoadedMedia, MediaSpec, load_media
from vl2cli.media.parallel import set_media_threads

LoadFn = Callable[[str, MediaSpec], LoadedMedia]
T = TypeVar("T")
#: forkserver: workers start from a clean process (no inherited torch/OpenMP thread state) and a
#: replacement worker forks from the server in milliseconds instead of re-importing torch.
_START_METHOD = "forkserver"
_PRELOAD_MODULES = ["vl2cli.media.loader"]
#: Seconds to wait for a worker to exit after asking it politely, before killing it.
_SHUTDOWN_GRACE_S = 2.0
#: In-flight files per worker when max_pending is not given (one decoding, one queued result).
_PENDING_PER_WORKER = 2
#: How often a caller waiting for a result re-checks that the feeder thread is still alive.
_RESULT_POLL_S = 1.0
#: Paths the reader thread may hold ready beyond `max_pending` (so a dispatch never waits on the walk).
READ_AHEAD = 1
#: Marks the end of the source in the reader's queue.
_END = object()


_main_lock = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a worker without it re-importing the caller's main module.

    multiprocessing makes a new worker import `__main__` first (by path or module name). A user's script
    without an `if __name__ == "__main__":` guard would then run again inside every worker (and code
    fed on stdin cannot be imported at all): every file failed as a decoder crash. The workers need
    nothing from `__main__` (their target and loader live in vl2cli), so while one starts the main
    module shows neither a path nor a spec.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _main_lock:
        saved_spec = getattr(main, "__spec__", None)
        had_file, saved_file = hasattr(main, "__file__"), getattr(main, "__file__", None)
        main.__spec__ = None
        if had_file:
            del main.__file__
        try:
            yield
        finally:
            main.__spec__ = saved_spec
            if had_file:
                main.__file__ = saved_file


def _start_forkserver_deaf_to_ctrl_c() -> None:
    """Start the forkserver (if not running yet) with SIGINT ignored, a disposition that survives its
    exec: it then imports torch for seconds, and a Ctrl-C meanwhile would print a KeyboardInterrupt
    traceback from it, and from each worker it forks (they inherit it too). Ctrl-C is the parent's to
    handle; the parent ignores it only for the instant of the spawn. Outside the main thread (a worker
    restarted by the feeder) the forkserver is running already and nothing is changed."""
    from multiprocessing import forkserver

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        return
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _worker_main(conn: Connection, spec: MediaSpec, load_fn: LoadFn, threads: int) -> None:
    """Worker loop: receive (seq, path), send (seq, LoadedMedia | MediaError); None ends the loop."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no worker tracebacks
    torch.set_num_threads(1)  # torch only casts here; the file's thread budget goes to decode/resize/audio
    set_media_threads(threads)
    while True:
        try:
            task = conn.recv()
            if task is None:
                return
        except (EOFError, OSError):  # the parent is gone (e.g. kill -9): leave quietly
            return
        seq, path = task
        try:
            conn.send((seq, _to_wire(decode_one(load_fn, path, spec))))
        except (BrokenPipeError, OSError):  # the parent is gone
            return


#: LoadedMedia fields that hold tensors.
_TENSOR_FIELDS = ("pixel_values", "fbank")


def _to_wire(result: LoadedMedia | MediaError) -> LoadedMedia | MediaError:
    """Tensors as numpy arrays, which pickle by value through the pipe.

    torch's own reducers would pass them through shared memory instead: each needs a /dev/shm segment
    (64 MB in a default container: good files then failed as decoder crashes) and the parent fetches
    the segment's descriptor from the worker while unpickling, so a worker frozen right after sending
    froze the run. By value, the uint8 frames of a 16-frame 384 px video are 7 MB: a few ms of copying.
    """
    if isinstance(result, LoadedMedia):
        for name in _TENSOR_FIELDS:
            tensor = getattr(result, name)
            if tensor is not None:
                setattr(result, name, tensor.numpy())
    return result


def _from_wire(result: LoadedMedia | MediaError) -> LoadedMedia | MediaError:
    import torch

    if isinstance(result, LoadedMedia):
        for name in _TENSOR_FIELDS:
            array = getattr(result, name)
            if array is not None:
                setattr(result, name, torch.from_numpy(array))
    return result


def _file_of(target: "str | Clip") -> str:
    return target.path if isinstance(target, Clip) else target


def decode_one(load_fn: LoadFn, path: "str | Clip", spec: MediaSpec) -> LoadedMedia | MediaError:
    """One file's result, its failures included: what a worker sends back for it.

    `path` may be a `Clip`: that window of the file, decoded with the clip's bounds in the spec.
    """
    if isinstance(path, Clip):
        spec, path = path.spec_for(spec), path.path
    try:
        return load_fn(path, spec)
    except MediaError as exc:
        return exc
    except Exception as exc:  # a decoder bug must cost this file only, reported as a media error
        return MediaError(f"{path}: unexpected {type(exc).__name__} while decoding: {exc}", path=path)


class InlineDecoder:
    """`DecodePool`'s interface, decoding in the calling process: for a run with a single file to do
    (`vl2 ask clip.mp4 "..."`), where starting worker processes costs more than it saves. No timeout
    and no crash isolation: those need a process to kill."""

    def __init__(self, spec: MediaSpec, *, load_fn: LoadFn = load_media) -> None:
        self.spec, self.load_fn = spec, load_fn
        self.feeder_waited_s = 0.0

    def __enter__(self) -> "InlineDecoder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def imap_items(self, items: Iterable[T], *, path_of: Callable[[T], "str | Clip | None"]
                   ) -> Iterator[tuple[T, LoadedMedia | MediaError | None]]:
        for item in items:
            path = path_of(item)
            started = time.perf_counter()
            result = None if path is None else decode_one(self.load_fn, path, self.spec)
            self.feeder_waited_s += time.perf_counter() - started
            yield item, result


@dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: Connection
    task: "tuple[int, str | Clip] | None" = None
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
        #: seconds callers of `imap` spent waiting for a file that was not decoded yet
        self.feeder_waited_s = 0.0

    # -------------------------------------------------------------- lifecycle
    def __enter__(self) -> "DecodePool":
        self._workers = [self._start_worker() for _ in range(self.num_workers)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _start_worker(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self.spec, self.load_fn, self.threads_per_worker), daemon=True)
        _start_forkserver_deaf_to_ctrl_c()
        with _main_module_hidden():
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
        """Yield (path, LoadedMedia or MediaError) per path, in input order, never raising for one file.

        A feeder thread pulls paths, dispatches them and collects results on its own, so decoding runs
        ahead while the caller works on what it was given (the model on a batch), until `max_pending`
        files are in flight or decoded-but-not-yet-taken: memory stays flat however many paths there
        are. `paths` is consumed on that thread (a lazy folder walk streams into the decoders); an
        exception it raises reaches the caller after the files before it.
        """
        for path, result in self.imap_items((Path(p) for p in paths), path_of=str):
            yield path, result  # type: ignore[misc]

    def imap_items(self, items: Iterable[T], *, path_of: Callable[[T], "str | Clip | None"]
                   ) -> Iterator[tuple[T, LoadedMedia | MediaError | None]]:
        """`imap` over arbitrary items: `path_of(item)` is the file (or `Clip` of a file) to decode, or
        None to pass the item through undecoded (result None) in its place in the order — e.g. a file
        already done."""
        if not self._workers:
            raise RuntimeError("use DecodePool as a context manager (with DecodePool(...) as pool)")
        feed = _Feed(self, iter(items), path_of)
        feed.start()
        try:
            yield from feed.results()
        finally:
            feed.stop()

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

    def _busy(self) -> list[_Worker]:
        return [w for w in self._workers if w.task is not None]

    def _collect(self, done: dict[int, LoadedMedia | MediaError], *, wake: Connection | None = None) -> None:
        """Wait for one event: a result, a dead worker, the nearest deadline, or `wake` becoming readable."""
        busy = self._busy()
        extra = [wake] if wake is not None else []
        if not busy:
            if extra:
                wait(extra)
            return
        timeout = max(min(w.deadline for w in busy) - time.monotonic(), 0)
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy] + extra, timeout=timeout)
        now = time.monotonic()
        for worker in busy:
            seq, path = worker.task
            if worker.conn in ready:
                try:
                    got_seq, result = worker.conn.recv()
                    result = _from_wire(result)
                except (EOFError, OSError):
                    pass  # died while sending: handled as a crash below
                else:
                    if isinstance(result, MediaError) and result.path is None:
                        result.path = _file_of(path)
                    done[got_seq] = result
                    worker.task = None
                    continue
            if worker.process.sentinel in ready or not worker.process.is_alive():
                code = worker.process.exitcode
                done[seq] = DecoderCrashError(
                    f"{path}: the decoder process died (exit code {code}); the file was skipped", path=_file_of(path))
                self._replace(worker)
            elif now >= worker.deadline:
                done[seq] = DecodeTimeoutError(
                    f"{path}: decoding took longer than {self.timeout_s:g} s; the decoder was stopped",
                    path=_file_of(path))
                self._replace(worker)


class _Feed(Generic[T]):
    """The threads of one `DecodePool.imap` call and the ordered hand-over to the caller.

    A reader thread pulls the source (a lazy walk may block) into a small bounded queue; the feeder
    thread alone touches the workers; the caller only takes finished results. `wake` (a pipe)
    interrupts the feeder's wait on the workers when the reader brings an item or the caller frees
    room or stops.
    """

    def __init__(self, pool: DecodePool, source: Iterator[T], path_of: Callable[[T], "str | Clip | None"]) -> None:
        self.pool, self.source, self.decode_path = pool, source, path_of
        self.cond = threading.Condition()
        self.item_of: dict[int, T] = {}  # in flight or finished, not yet taken: bounded by max_pending
        self.finished: dict[int, LoadedMedia | MediaError | None] = {}
        self.next_out = 0
        self.exhausted = False
        self.stopping = False
        self.failure: BaseException | None = None
        self.wake_reader, self.wake_writer = mp.Pipe(duplex=False)
        self.wake_lock = threading.Lock()
        #: items read from the source, not yet taken by the feeder: the walk stays at most
        #: READ_AHEAD items (plus the one in the reader's hand) past the in-flight window
        self.incoming: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
        self.reader = threading.Thread(target=self._read_source, name="vl2-decode-reader", daemon=True)
        self.thread = threading.Thread(target=self._run, name="vl2-decode-feeder", daemon=True)
        #: seconds the caller spent waiting for the next result (decode not ahead enough)
        self.waited_s = 0.0

    def start(self) -> None:
        self.reader.start()
        self.thread.start()

    def _wake(self) -> None:
        with self.wake_lock:  # the caller and the reader thread both wake the feeder
            try:
                self.wake_writer.send_bytes(b"x")
            except (OSError, ValueError):
                pass

    def _drain_wake(self) -> None:
        while self.wake_reader.poll():
            self.wake_reader.recv_bytes()

    def _read_source(self) -> None:
        """Reader thread: pull items (a slow walk blocks here, not the feeder) into the bounded queue."""
        try:
            for item in self.source:
                if not self._put(item):
                    return
        except Exception as exc:  # noqa: BLE001 - e.g. a walk error: raised to the caller after earlier files
            self.failure = exc
        self._put(_END)

    def _put(self, item: object) -> bool:
        """Queue an item for the feeder (waiting while the queue is full); False once stopping."""
        while not self.stopping:
            try:
                self.incoming.put(item, timeout=_RESULT_POLL_S)
            except queue.Full:
                continue
            self._wake()
            return True
        return False

    def _run(self) -> None:
        pool, queued = self.pool, []
        next_seq = 0
        try:
            while True:
                with self.cond:
                    if self.stopping:
                        return
                    room = pool.max_pending - len(self.item_of)
                while room > 0 and not self.exhausted:
                    try:
                        item = self.incoming.get_nowait()
                    except queue.Empty:
                        break
                    if item is _END:
                        self.exhausted = True
                        break
                    path = self.decode_path(item)
                    with self.cond:
                        self.item_of[next_seq] = item
                        if path is None:  # nothing to decode: ready at once, in its place
                            self.finished[next_seq] = None
                            self.cond.notify_all()
                    if path is not None:
                        queued.append((next_seq, path))
                    next_seq += 1
                    room -= 1
                pool._dispatch(queued)
                if self.exhausted and not queued and not pool._busy():
                    return
                done: dict[int, LoadedMedia | MediaError] = {}
                pool._collect(done, wake=self.wake_reader)
                self._drain_wake()
                if done:
                    with self.cond:
                        self.finished.update(done)
                        self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - a pool fault ends the run: handed to the caller
            self.failure = exc
        finally:
            with self.cond:
                self.cond.notify_all()

    def results(self) -> Iterator[tuple[T, LoadedMedia | MediaError | None]]:
        while True:
            with self.cond:
                started = time.perf_counter()
                while self.next_out not in self.finished:
                    if not self.thread.is_alive():  # everything it fed has a result, or it failed
                        self.waited_s += time.perf_counter() - started
                        if self.failure is not None:
                            raise self.failure
                        return
                    self.cond.wait(timeout=_RESULT_POLL_S)
                self.waited_s += time.perf_counter() - started
                result = self.finished.pop(self.next_out)
                item = self.item_of.pop(self.next_out)
                self.next_out += 1
            self._wake()  # room for one more file
            yield item, result

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
        self._wake()
        self.thread.join()
        self.reader.join(_SHUTDOWN_GRACE_S)  # a reader stuck in a slow walk is a daemon: left behind
        for worker in self.pool._busy():  # stopped early: a late result must not reach a later imap
            self.pool._replace(worker)
        self.pool.feeder_waited_s += self.waited_s
        self.wake_reader.close()
        self.wake_writer.close()
