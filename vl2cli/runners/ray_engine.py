"""The model half of a run on a Ray Data actor pool (`--engine ray`, optional extra `vl2[ray]`).

The driver (the vl2 process) discovers the files and skips the done ones exactly as a local run does
(`vl2cli.api.iter_outcomes`), then hands the files that need work to Ray as a Dataset of paths.
`map_batches` runs them through a pool of `RecordActor`s — one per GPU (`num_gpus=1`), or CPU actors
on a cluster without GPUs — each of which loads the model once and turns a batch of paths into vl2
records with the local pipeline itself (`vl2cli.tasks.pipeline.run_planned`: decoding, batching, the
model, per-file errors). Records travel back as JSON text; the driver yields them, so the CLI writes
them through vl2's own writer (lock, fsync, resume).

Ray retries the batch of an actor that died (at-least-once), so the driver drops a record for a file
it already has. An actor that dies on the same batch more than `TASK_RETRIES` times gives up that
batch: its files get a `worker_lost` error record (transient: a later run tries them again) instead
of the whole job failing, so every file still ends with exactly one record.
"""
from __future__ import annotations

import dataclasses

import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

from .. import __version__
from ..errors import ModelError, Vl2Error, WorkerLostError, record_error
from ..output.record import FileStamp, Record, Request
from ..tasks.plan import FileOutcome, Planned, PlannedFile, SkippedFiles
from ..tasks.spec import RunOptions, TaskSpec

log = logging.getLogger(__name__)

#: Times Ray re-runs a batch whose actor died before its files are given up as `worker_lost`.
TASK_RETRIES = 2
#: Times vl2 hands the files of batches no actor finished to a new pool (the live nodes') before they
#: are `worker_lost`: a lost node's actor cannot be restarted where it was, so Ray's retries alone fail.
RESUBMISSIONS = 1
WORKER_LOST_CODE = WorkerLostError.code
ENGINE_ERROR_CODE = ModelError.code
#: Files per actor call: model batches run inside it, so a call is a few of them; a dead actor's call is
#: redone whole, so it stays small. On GPUs (where a model batch may hold up to 64 files) it is larger.
CPU_FILES_PER_CALL = 8
GPU_FILES_PER_CALL = 64
#: Longest temporary folder path Ray's socket paths still fit under (see `_short_temp_root`).
MAX_TEMP_ROOT_CHARS = 24
#: Variables of the driver's environment the actors need (where the hub cache is, offline mode, vl2's
#: own settings) and get through Ray's runtime_env: on a cluster started elsewhere they are not in
#: the workers' environment. Tokens are not sent (a runtime_env is shown by Ray's dashboard).
FORWARDED_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "VL2_")
FORWARDED_NAMES = ("TORCH_HOME", "XDG_CACHE_HOME")
#: The row index of an actor's answer that is not a record: it could not load the model.
FATAL_ROW = -1
#: Seconds the processes of a local Ray instance get to end after ray.shutdown() before they are killed.
SHUTDOWN_GRACE_S = 3.0


def forwarded_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's variables the actors get (`FORWARDED_PREFIXES`/`FORWARDED_NAMES`, no tokens)."""
    env = os.environ if env is None else env
    return {name: value for name, value in env.items()
            if (name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES) and "TOKEN" not in name}


@contextmanager
def records_stdout(stdout: TextIO | None = None) -> Iterator[TextIO]:
    """vl2's records keep the process's stdout to themselves while Ray runs: file descriptor 1 is moved
    to a private copy that the returned stream writes to, and fd 1 itself (which Ray's threads, its C++
    core and the processes it starts inherit) points at stderr. Any other `stdout` (a test's buffer)
    is returned as is."""
    stdout = stdout or sys.stdout
    try:
        is_fd_1 = stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        is_fd_1 = False
    if not is_fd_1:
        yield stdout
        return
    stdout.flush()
    private = os.dup(1)
    stream = os.fdopen(private, "w", encoding=getattr(stdout, "encoding", None) or "utf-8",
                       errors=getattr(stdout, "errors", None) or "strict", closefd=True)
    os.dup2(2, 1)
    try:
        yield stream
    finally:
        try:
            stream.flush()
        finally:
            sys.stdout.flush()
            os.dup2(private, 1)
            stream.close()


def _pending_row(index: int, plan: PlannedFile) -> dict[str, Any]:
    assert plan.stamp is not None
    return {"index": index, "path": plan.stamp.path, "size_bytes": plan.stamp.size_bytes,
            "mtime_ns": plan.stamp.mtime_ns}


def _error_record(request: Request, plan: PlannedFile, code: str, message: str) -> dict[str, Any]:
    return Record(request, path=str(plan.path), stamp=plan.stamp, vl2_version=__version__,
                  error=record_error(code, message)).as_dict()


def _short_temp_root() -> str:
    """The temporary folder, unless its path is too long for the Unix sockets Ray makes inside it
    (107 bytes, of which Ray's session and socket names take about 70): then /tmp."""
    root = tempfile.gettempdir()
    return root if len(root) <= MAX_TEMP_ROOT_CHARS or not os.access("/tmp", os.W_OK) else "/tmp"


@contextmanager
def _ray_data_logs_quiet() -> Iterator[None]:
    """Ray Data's own INFO lines and the tracebacks of a dead actor's batch stay in Ray's log files; vl2
    reports what they mean (retried files, `worker_lost` records) in its own lines."""
    logger = logging.getLogger("ray.data")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


class RecordActor:
    """One Ray actor: loads the model once, then turns batches of paths into records (never raising for
    a file: an exception escaping a Ray Data UDF aborts the whole job)."""

    def __init__(self, load_options: dict[str, Any], task: TaskSpec, options: RunOptions, request: Request) -> None:
        self.task, self.options, self.request = task, options, request
        self.model: Any = None
        #: why the model could not be loaded here: every call answers with it, and the driver stops
        self.load_error: str | None = None
        try:
            self.model = self.load(load_options)
        except Exception as exc:  # noqa: BLE001 - raising here only shows Ray's ActorDiedError to the user
            import socket

            self.load_error = f"on {socket.gethostname()}: {type(exc).__name__}: {exc}".splitlines()[0]

    def load(self, load_options: dict[str, Any]) -> Any:
        from ..loading import load_model

        return load_model(**load_options)  # type: ignore[arg-type]

    def process(self, plans: list[PlannedFile]) -> Iterator[FileOutcome]:
        """The local pipeline over this batch (decode, model batches, one record per file)."""
        from ..tasks.pipeline import run_planned

        return run_planned(self.model, iter(plans), self.task, self.options, self.request)

    def records(self, plans: list[PlannedFile]) -> list[dict[str, Any]]:
        """One record per plan, in order. Should `process` raise (a bug, not a bad file: those are records
        already), the files without a record are tried one at a time, so only the one that raises fails."""
        by_path: dict[str, dict[str, Any]] = {}
        try:
            for outcome in self.process(plans):
                if outcome.record is not None:
                    by_path[str(outcome.path)] = outcome.record
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            left = [plan for plan in plans if str(plan.path) not in by_path]
            if len(left) == 1:
                by_path[str(left[0].path)] = _error_record(self.request, left[0], ENGINE_ERROR_CODE,
                                                           f"{left[0].path}: {type(exc).__name__}: {exc}")
            else:
                for plan in left:
                    by_path.update(zip([str(plan.path)], self.records([plan])))
        return [by_path.get(str(plan.path)) or _error_record(self.request, plan, ENGINE_ERROR_CODE,
                                                             f"{plan.path}: the pipeline gave no record")
                for plan in plans]

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        if self.load_error is not None:
            return {"index": np.asarray([FATAL_ROW]), "record": np.array([self.load_error], dtype=object)}
        plans = [PlannedFile(Path(str(path)), FileStamp(str(path), int(size), int(mtime)))
                 for path, size, mtime in zip(batch["path"], batch["size_bytes"], batch["mtime_ns"])]
        # ASCII JSON: any file name (even one that is not valid UTF-8) crosses Arrow intact
        lines = [json.dumps(record, ensure_ascii=True, allow_nan=False) for record in self.records(plans)]
        return {"index": np.asarray(batch["index"]), "record": np.array(lines, dtype=object)}


class RayRunner:
    """A `vl2cli.tasks.plan.Runner` on Ray Data. Ray is started (or joined, with `address`) on the first
    file that needs work, and shut down by `shutdown()` only if this runner started or joined it."""

    def __init__(self, load_options: dict[str, Any], *, address: str | None = None,
                 actor_class: type[RecordActor] = RecordActor, files_per_call: int | None = None,
                 task_retries: int = TASK_RETRIES, num_cpus: int | None = None, actors: int | None = None,
                 resubmissions: int = RESUBMISSIONS) -> None:
        self.load_options, self.address, self.actor_class = load_options, address, actor_class
        self.files_per_call, self.task_retries = files_per_call, task_retries
        self._connected = False
        self._temp_dir: str | None = None
        self._children: set[Any] = set()
        #: CPUs a local instance gets (None: Ray counts them); inside a Slurm allocation, the task's
        self.num_cpus = num_cpus if num_cpus is not None else local_cpus()
        self.keep_logs = False
        #: actors in the pool (None: one per GPU, else one per node with CPUs, at most one per call)
        self.actors = actors
        self.resubmissions = resubmissions

    # ------------------------------------------------------------ Ray's lifecycle
    def _start(self) -> None:
        import ray

        address = self.address or os.environ.get("RAY_ADDRESS")
        if address and address.startswith("ray://"):
            # Ray Client needs grpcio (not in vl2[ray]) and streams every record through one proxy
            raise Vl2Error(f"engine ray: {address} is a Ray Client address, which vl2 does not use; run vl2 on a "
                           f"node of the cluster with ray_address auto (or HEAD:6379, the GCS port)")
        if ray.is_initialized():  # the caller's own Ray session: used, and left running
            return
        started = perf_counter()
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                                  "runtime_env": {"env_vars": forwarded_env()}}
        # ray.init replaces the SIGTERM handler with its own sys.exit(15); vl2's (one line, exit 143) stays
        handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            if address:
                ray.init(address=address, **kwargs)
                what = f"joined the Ray cluster at {address}"
            else:
                # Ray's session files (sockets, logs) go in a folder of vl2's own, removed at shutdown
                self._temp_dir = tempfile.mkdtemp(prefix="vl2-ray-", dir=_short_temp_root())
                ray.init(_temp_dir=self._temp_dir, num_cpus=self.num_cpus, **kwargs)
                what = "started a local Ray instance"
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            self.shutdown()
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise Vl2Error(f"engine ray: could not {where}: {_join_hint(exc, address)}") from exc
        finally:
            for number, handler in handlers.items():
                if handler is not None and signal.getsignal(number) is not handler:
                    try:
                        signal.signal(number, handler)
                    except ValueError:  # not the main thread: nothing of vl2's to keep
                        pass
        self._connected = True
        if not address:
            self._children = _descendants()
        resources = ray.cluster_resources()
        log.info("Ray: %s in %.1f s (%d CPUs, %d GPUs)", what, perf_counter() - started,
                 int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))
        logs = _logs_folder()
        if logs:
            kept = " (removed at the end of a run unless a Ray worker died in it)" if self._temp_dir else ""
            log.info("Ray: its logs are in %s%s; Ray's own console lines go to stderr", logs, kept)

    def shutdown(self) -> None:
        """Stop (or leave) the Ray session this runner started, end every process of a local instance
        (raylet, GCS, workers holding a model) within seconds, and remove its temporary folder (kept,
        and named, when a worker died in the run: its logs say why)."""
        if self._connected:
            import ray

            children = _descendants() | self._children
            try:
                ray.shutdown()
            finally:
                self._connected = False
                if self._temp_dir is not None:
                    _end_processes(children)
        self._children = set()
        if self._temp_dir is not None:
            if self.keep_logs:
                log.warning("Ray: a worker died in this run; Ray's logs are kept in %s", self._temp_dir)
            else:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # ------------------------------------------------------------ the run
    def __call__(self, model: Any, planned: Iterator[Planned], task: TaskSpec, options: RunOptions,
                 request: Request) -> Iterator[FileOutcome | SkippedFiles]:
        """Yield settled files (and SkippedFiles runs) as they come, then one record per pending file from
        the actor pool."""
        pending: list[PlannedFile] = []
        for plan in planned:
            if plan.pending:
                pending.append(plan)  # type: ignore[arg-type]
            else:
                yield plan.outcome  # type: ignore[misc]
        if not pending:
            return
        self._start()
        yield from self._run(pending, task, options, request)

    def _pool(self, options: RunOptions, files: int) -> tuple[dict[str, Any], int, int]:
        """map_batches' pool arguments, the actors and the files per call: one actor per GPU, else one
        CPU actor per node (each holds a whole model in memory), never more than there are calls to
        make; `actors` (the setting) overrides the count."""
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        per_call = self.files_per_call or max(options.batch_size or 0, GPU_FILES_PER_CALL if gpus else CPU_FILES_PER_CALL)
        calls = max(1, math.ceil(files / per_call))
        wanted = self.actors or (gpus if gpus else max(1, _cpu_nodes()))
        actors = max(1, min(wanted, calls))
        # one call at a time per actor: when an actor dies, only the batch it was working on is charged a
        # retry (batches queued behind it would be too, and could run out of retries through no fault of theirs)
        compute = ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1)
        # SPREAD: actors on as many nodes as there are (a big node would otherwise take them all)
        if gpus:
            return {"compute": compute, "num_gpus": 1, "scheduling_strategy": "SPREAD"}, actors, per_call
        return {"compute": compute, "num_cpus": 1, "scheduling_strategy": "SPREAD"}, actors, per_call

    def _run(self, pending: list[PlannedFile], task: TaskSpec, options: RunOptions,
             request: Request) -> Iterator[FileOutcome]:
        """Every pending file through the actor pool; the files of batches that no actor finished (a
        worker or a whole node died more often than Ray's retries allow) go through a new pool, sized
        for the nodes still alive, up to `resubmissions` more times before they are `worker_lost`."""
        import ray.data

        context = ray.data.DataContext.get_current()
        context.max_errored_blocks = -1  # a batch given up after TASK_RETRIES costs its files, not the run
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True  # records in input order, as a local run writes them
        local_only = dataclasses.replace(options, on_batch=None)  # a callback into this process's console
        arguments = {"load_options": self.load_options, "task": task, "options": local_only, "request": request}
        seen: set[int] = set()
        repeated = 0
        todo = list(range(len(pending)))
        passes = 0
        while todo and passes <= self.resubmissions:
            if passes:
                self.keep_logs = True
                log.warning("Ray: %d file(s) whose batch no Ray actor finished (a worker or a node died) go to "
                            "the live actors again", len(todo))
            passes += 1
            pool, actors, per_call = self._pool(options, len(todo))
            log.info("Ray: %d file(s) to %d actor(s) on %s, %d per call", len(todo), actors,
                     "GPU" if "num_gpus" in pool else "CPU", per_call)
            rows = [_pending_row(index, pending[index]) for index in todo]
            dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_call)))
            with warnings.catch_warnings():
                # Ray 2.60 takes max_task_retries only through its deprecated **ray_remote_args
                warnings.simplefilter("ignore", DeprecationWarning)
                try:
                    dataset = dataset.map_batches(self.actor_class, batch_size=per_call, batch_format="numpy",
                                                  fn_constructor_kwargs=arguments, max_task_retries=self.task_retries,
                                                  **pool)
                except TypeError:  # a Ray without it: its default, unbounded retries
                    dataset = dataset.map_batches(self.actor_class, batch_size=per_call, batch_format="numpy",
                                                  fn_constructor_kwargs=arguments, **pool)
            try:
                with _ray_data_logs_quiet():
                    for row in dataset.iter_rows():
                        index = int(row["index"])
                        if index == FATAL_ROW:
                            raise _ActorCannotLoad(str(row["record"]))
                        if index in seen:  # at-least-once: a retried batch's record for a file already written
                            repeated += 1
                            continue
                        seen.add(index)
                        yield FileOutcome(pending[index].path, json.loads(row["record"]))
            except (KeyboardInterrupt, GeneratorExit):
                raise
            except _ActorCannotLoad as exc:
                raise Vl2Error(f"engine ray: a Ray actor could not load the model {exc}") from None
            except Exception as exc:  # Ray itself failed (e.g. the head went away): the run cannot go on
                raise Vl2Error(f"engine ray: the run stopped: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
            todo = [index for index in todo if index not in seen]
        if todo:
            self.keep_logs = True
        if repeated:
            log.warning("Ray re-ran %d file(s) already recorded (a retried batch); their second records were dropped",
                        repeated)
        for index in todo:
            plan = pending[index]
            yield FileOutcome(plan.path, _error_record(
                request, plan, WORKER_LOST_CODE,
                f"{plan.path}: no Ray actor finished its batch: the worker died on each of {passes} pass(es) "
                f"over the live actors (each with up to {self.task_retries} retries by Ray)"))


class _ActorCannotLoad(Exception):
    """An actor's answer: it could not load the model (the message names the node and the cause)."""


def local_cpus(env: Mapping[str, str] | None = None) -> int | None:
    """The CPUs a local Ray instance may use: inside a Slurm job, the task's (SLURM_CPUS_ON_NODE, or the
    process's CPU affinity), not the whole node's; elsewhere None (Ray counts the machine's)."""
    env = os.environ if env is None else env
    if not env.get("SLURM_JOB_ID"):
        return None
    text = env.get("SLURM_CPUS_ON_NODE", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return len(os.sched_getaffinity(0)) or None
    except (AttributeError, OSError):
        return None


def _cpu_nodes() -> int:
    """Live nodes of the cluster with at least one CPU."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) >= 1)


def _logs_folder() -> str | None:
    """Where this Ray session writes its logs on this machine (None when Ray does not say)."""
    try:
        import ray

        node = ray._private.worker._global_node  # noqa: SLF001 - the only place Ray names it
        return node.get_logs_dir_path() if node is not None else None
    except Exception:  # noqa: BLE001 - a Ray without it: the line is left out
        return None


def _descendants() -> set[Any]:
    """This process's child processes, theirs, and so on (a local Ray's raylet, GCS and workers)."""
    try:
        import psutil

        return set(psutil.Process().children(recursive=True))
    except Exception:  # noqa: BLE001 - psutil missing or /proc unreadable: ray.shutdown alone
        return set()


def _end_processes(processes: set[Any]) -> None:
    """Ask what is left of `processes` to end (SIGTERM), then kill what is still there after the grace."""
    try:
        import psutil
    except ImportError:
        return
    alive = [process for process in processes if process.is_running()]
    for process in alive:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=SHUTDOWN_GRACE_S)
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=SHUTDOWN_GRACE_S)


def _join_hint(exc: BaseException, address: str | None) -> str:
    """Ray's error as one line, with what to do when the cluster asks for token authentication."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    chain, cause = [], exc
    while cause is not None and len(chain) < 8:  # Ray's ConnectionError hides the AuthenticationError under it
        chain.append(f"{type(cause).__name__}: {cause}".lower())
        cause = cause.__cause__ or cause.__context__
    said = " ".join(chain)
    if address and os.environ.get("RAY_AUTH_MODE") != "token" and ("auth" in said or "unauthenticated" in said):
        text += "; the cluster may use token authentication: set RAY_AUTH_MODE=token (and its token) for vl2 too"
    return text
