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
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter
from typing import Any

from .. import __version__
from ..errors import Vl2Error
from ..output.record import FileStamp, Request, build_record
from ..tasks.plan import FileOutcome, PlannedFile
from ..tasks.spec import RunOptions, TaskSpec

log = logging.getLogger(__name__)

#: Times Ray re-runs a batch whose actor died before its files are given up as `worker_lost`.
TASK_RETRIES = 2
WORKER_LOST_CODE = "worker_lost"
ENGINE_ERROR_CODE = "model_error"
#: Files per actor call: model batches run inside it, so a call is a few of them; a dead actor's call is
#: redone whole, so it stays small. On GPUs (where a model batch may hold up to 64 files) it is larger.
CPU_FILES_PER_CALL = 8
GPU_FILES_PER_CALL = 64
#: Longest temporary folder path Ray's socket paths still fit under (see `_short_temp_root`).
MAX_TEMP_ROOT_CHARS = 24
#: A CPU-only cluster gets one actor per this many CPUs (each actor holds a whole model in memory).
CPUS_PER_CPU_ACTOR = 4


def _pending_row(index: int, plan: PlannedFile) -> dict[str, Any]:
    assert plan.stamp is not None
    return {"index": index, "path": plan.stamp.path, "size_bytes": plan.stamp.size_bytes,
            "mtime_ns": plan.stamp.mtime_ns}


def _error_record(request: Request, plan: PlannedFile, code: str, message: str) -> dict[str, Any]:
    return build_record(request, path=str(plan.path), stamp=plan.stamp, vl2_version=__version__,
                        error={"code": code, "message": message})


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
        from ..api import load_model

        self.model = load_model(**load_options)  # type: ignore[arg-type]
        self.task, self.options, self.request = task, options, request

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

        plans = [PlannedFile(Path(str(path)), FileStamp(str(path), int(size), int(mtime)))
                 for path, size, mtime in zip(batch["path"], batch["size_bytes"], batch["mtime_ns"])]
        # ASCII JSON: any file name (even one that is not valid UTF-8) crosses Arrow intact
        lines = [json.dumps(record, ensure_ascii=True, allow_nan=False) for record in self.records(plans)]
        return {"index": np.asarray(batch["index"]), "record": np.array(lines, dtype=object)}


class RayRunner:
    """A `vl2cli.api.Runner` on Ray Data. Ray is started (or joined, with `address`) on the first
    file that needs work, and shut down by `shutdown()` only if this runner started or joined it."""

    def __init__(self, load_options: dict[str, Any], *, address: str | None = None,
                 actor_class: type[RecordActor] = RecordActor, files_per_call: int | None = None,
                 task_retries: int = TASK_RETRIES) -> None:
        self.load_options, self.address, self.actor_class = load_options, address, actor_class
        self.files_per_call, self.task_retries = files_per_call, task_retries
        self._connected = False
        self._temp_dir: str | None = None

    # ------------------------------------------------------------ Ray's lifecycle
    def _start(self) -> None:
        import ray

        if ray.is_initialized():  # the caller's own Ray session: used, and left running
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        started = perf_counter()
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if address:
                ray.init(address=address, **kwargs)
                what = f"joined the Ray cluster at {address}"
            else:
                # Ray's session files (sockets, logs) go in a folder of vl2's own, removed at shutdown
                self._temp_dir = tempfile.mkdtemp(prefix="vl2-ray-", dir=_short_temp_root())
                ray.init(_temp_dir=self._temp_dir, **kwargs)
                what = "started a local Ray instance"
        except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
            self.shutdown()
            where = f"join the Ray cluster at {address}" if address else "start a local Ray instance"
            raise Vl2Error(f"engine ray: could not {where}: {exc}".splitlines()[0]) from exc
        self._connected = True
        resources = ray.cluster_resources()
        log.info("Ray: %s in %.1f s (%d CPUs, %d GPUs)", what, perf_counter() - started,
                 int(resources.get("CPU", 0)), int(resources.get("GPU", 0)))

    def shutdown(self) -> None:
        """Stop (or leave) the Ray session this runner started, and remove its temporary folder."""
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    # ------------------------------------------------------------ the run
    def __call__(self, model: Any, planned: Iterator[PlannedFile], task: TaskSpec, options: RunOptions,
                 request: Request) -> Iterator[FileOutcome]:
        """Yield settled files as they come, then one record per pending file from the actor pool."""
        pending: list[PlannedFile] = []
        for plan in planned:
            if plan.pending:
                pending.append(plan)
            else:
                yield plan.outcome  # type: ignore[misc]
        if not pending:
            return
        self._start()
        yield from self._run(pending, task, options, request)

    def _pool(self, options: RunOptions) -> tuple[dict[str, Any], int, int]:
        """map_batches' pool arguments, the actors and the files per call: one actor per GPU, else CPU actors."""
        import ray

        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        per_call = self.files_per_call or max(options.batch_size or 0, GPU_FILES_PER_CALL if gpus else CPU_FILES_PER_CALL)
        # one call at a time per actor: when an actor dies, only the batch it was working on is charged a
        # retry (batches queued behind it would be too, and could run out of retries through no fault of theirs)
        if gpus:
            return {"compute": ray.data.ActorPoolStrategy(size=gpus, max_tasks_in_flight_per_actor=1),
                    "num_gpus": 1}, gpus, per_call
        actors = max(1, cpus // CPUS_PER_CPU_ACTOR)
        return {"compute": ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                "num_cpus": 1}, actors, per_call

    def _run(self, pending: list[PlannedFile], task: TaskSpec, options: RunOptions,
             request: Request) -> Iterator[FileOutcome]:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.max_errored_blocks = -1  # a batch given up after TASK_RETRIES costs its files, not the run
        context.enable_progress_bars = False
        context.execution_options.preserve_order = True  # records in input order, as a local run writes them
        pool, actors, per_call = self._pool(options)
        log.info("Ray: %d file(s) to %d actor(s) on %s, %d per call", len(pending), actors,
                 "GPU" if "num_gpus" in pool else "CPU", per_call)
        rows = [_pending_row(index, plan) for index, plan in enumerate(pending)]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / per_call)))
        local_only = dataclasses.replace(options, on_batch=None)  # a callback into this process's console
        arguments = {"load_options": self.load_options, "task": task, "options": local_only, "request": request}
        with warnings.catch_warnings():
            # Ray 2.60 takes max_task_retries only through its deprecated **ray_remote_args
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                dataset = dataset.map_batches(self.actor_class, batch_size=per_call, batch_format="numpy",
                                              fn_constructor_kwargs=arguments, max_task_retries=self.task_retries, **pool)
            except TypeError:  # a Ray without it: its default, unbounded retries
                dataset = dataset.map_batches(self.actor_class, batch_size=per_call, batch_format="numpy",
                                              fn_constructor_kwargs=arguments, **pool)
        seen: set[int] = set()
        repeated = 0
        try:
            with _ray_data_logs_quiet():
                for row in dataset.iter_rows():
                    index = int(row["index"])
                    if index in seen:  # at-least-once: a retried batch's record for a file already written
                        repeated += 1
                        continue
                    seen.add(index)
                    yield FileOutcome(pending[index].path, json.loads(row["record"]))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # e.g. no actor could load the model: the run cannot go on
            raise Vl2Error(f"engine ray: the run stopped: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
        if repeated:
            log.warning("Ray re-ran %d file(s) already recorded (a retried batch); their second records were dropped",
                        repeated)
        for index, plan in enumerate(pending):
            if index not in seen:
                yield FileOutcome(plan.path, _error_record(
                    request, plan, WORKER_LOST_CODE,
                    f"{plan.path}: the Ray worker processing it died {self.task_retries + 1} time(s)"))
