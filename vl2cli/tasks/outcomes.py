"""The one run path: walk the inputs, plan each file (resume check), hand the pending ones to a runner.

`iter_outcomes` is what every run goes through (`vl2cli.run.BatchRun` for the CLI and
`vl2cli.caption/ask/classify`; re-exported by `vl2cli.api`); `plan_run` is its torch-free front, which
`--dry-run` prints. Nothing here imports torch until a file needs the model.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..discover import WalkOptions, WalkWarning
from ..errors import Vl2Error

if TYPE_CHECKING:
    from ..output.record import Request, ResumeKey
    from .plan import FileOutcome, KnownSegments, Planned, Runner, SkippedFiles
    from .spec import RunOptions, TaskSpec

#: The inputs of a run as the library takes them: one path, or several.
PathsArg = str | Path | Sequence[str | Path]
log = logging.getLogger(__name__)


def as_path_list(paths: PathsArg) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _log_walk_warning(warning: "WalkWarning") -> None:
    log.warning(warning.message)  # a library reports walk problems through logging, not stderr


def _counted(files: Iterator[str], on_end: Callable[[int], None]) -> Iterator[str]:
    count = 0
    for file in files:
        count += 1
        yield file
    on_end(count)


def iter_outcomes(
    model: Any,
    paths: PathsArg,
    task: "TaskSpec",
    options: "RunOptions | None" = None,
    *,
    is_done: "Callable[[ResumeKey], bool] | None" = None,
    known_segments: "KnownSegments | None" = None,
    on_warning: "Callable[[WalkWarning], None] | None" = None,
    on_walk_end: Callable[[int], None] | None = None,
    walk: WalkOptions | None = None,
    keep: Callable[[Path], bool] | None = None,
    runner: "Runner | None" = None,
    listed: Iterable[str | Path] | None = None,
    skipped_runs: bool = False,
) -> Iterator["FileOutcome | SkippedFiles"]:
    """The one run path (the CLI wraps it): one FileOutcome per file (and question), streamed as batches finish.

    Folders are walked lazily (the first file is decoded before the walk of a large archive ends), as
    `walk` says (default `WalkOptions()`: recursive, every media kind); `listed` adds the paths of a
    list (`vl2cli.input_lists`, read once, as they come); `is_done(key)` marks files an earlier run
    finished (skipped outcomes, `record is None`); walk problems go to `on_warning` (default: this module's logger); `on_walk_end(n)` hears how many
    files the walk found once it has ended (e.g. a progress bar's total). `keep(path)` drops the
    files it refuses before anything else (a Slurm shard keeps its own, `vl2cli.runners.shards`);
    `runner` does the model half for the files that need work (default: this process's pipeline,
    `pipeline.run_planned`; `vl2cli.runners.ray_engine` spreads it over a Ray cluster). `model` is a loaded VideoLlama2 or a
    `LazyModel`: until a file needs the model, nothing here imports torch, so a rerun where every file
    is done returns in the time the walk takes. With `options.segmenting`, each segment of a long file
    is an outcome of its own; `known_segments(file_key, by)` lists a file's segments from earlier
    records (`ResumeIndex.known_segments`) so a finished file is not cut again. `skipped_runs=True`
    yields the files already done as `SkippedFiles` runs instead of an outcome each, for a caller
    that only counts them (`vl2cli.run.BatchRun`: a rerun of a done archive then costs a stat and a
    lookup per file).
    """
    from .spec import RunOptions

    options = options or RunOptions()  # checked now, at the call: a missing input or model raises here
    planned, requests = plan_run(model, paths, task, options, is_done=is_done, known_segments=known_segments,
                                 on_warning=on_warning, on_walk_end=on_walk_end, walk=walk, listed=listed,
                                 keep=keep, skipped_runs=True)
    if runner is not None and len(requests) > 1:
        raise Vl2Error("several questions per file run on the local engine only, not on Ray yet")
    outcomes = _outcomes(model, planned, task, options, requests[0], runner)
    return outcomes if skipped_runs else _each_file(outcomes)


def plan_run(
    model: Any,
    paths: PathsArg,
    task: "TaskSpec",
    options: "RunOptions",
    *,
    is_done: "Callable[[ResumeKey], bool] | None" = None,
    known_segments: "KnownSegments | None" = None,
    on_warning: "Callable[[WalkWarning], None] | None" = None,
    on_walk_end: Callable[[int], None] | None = None,
    walk: WalkOptions | None = None,
    listed: Iterable[str | Path] | None = None,
    keep: Callable[[Path], bool] | None = None,
    skipped_runs: bool = False,
) -> tuple[Iterator["Planned"], tuple["Request", ...]]:
    """The front of `iter_outcomes` (walk, stat, resume check; torch-free): the planned files and the
    run's requests (one per question). `--dry-run` prints this without running it. `skipped_runs`:
    files already done come as `SkippedFiles` runs (see `plan_files`), else a PlannedFile each."""
    from .plan import build_requests, plan_files

    warn = on_warning or _log_walk_warning
    walk = walk or WalkOptions()
    files: Iterator[str] = walk.iter_paths(as_path_list(paths), on_warning=warn)  # a Path only where work is
    if listed is not None:
        from ..input_lists import each_once, iter_listed

        files = each_once(itertools.chain(files, map(str, iter_listed(
            listed, recursive=walk.recursive, kinds=walk.kinds, include=walk.include, exclude=walk.exclude,
            on_warning=warn))))
    if keep is not None:
        files = (file for file in files if keep(Path(file)))
    if on_walk_end is not None:
        files = _counted(files, on_walk_end)
    requests = build_requests(model, task, options)
    planned = plan_files(files, requests, is_done, segmenting=options.segmenting, known_segments=known_segments,
                         skipped_runs=skipped_runs)
    return planned, requests


def _each_file(outcomes: Iterator["FileOutcome | SkippedFiles"]) -> Iterator["FileOutcome"]:
    """One outcome per file: runs of skipped files expanded (the library's documented contract)."""
    from .plan import SkippedFiles

    for outcome in outcomes:
        if isinstance(outcome, SkippedFiles):
            yield from outcome.outcomes()
        else:
            yield outcome


def _outcomes(model: Any, planned: Iterator["Planned"], task: "TaskSpec", options: "RunOptions",
              request: "Request", runner: "Runner | None" = None) -> Iterator["FileOutcome | SkippedFiles"]:
    for plan in planned:
        if plan.pending:
            if runner is None:
                from .pipeline import run_planned as runner  # torch: only now that a file needs the model

            yield from runner(model, itertools.chain([plan], planned), task, options, request)
            return
        yield plan.outcome


__all__ = ["PathsArg", "as_path_list", "iter_outcomes", "plan_run"]
