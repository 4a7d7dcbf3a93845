"""Which files need work: stat each one and check the resume index — without importing torch.

This is the front of the run loop, kept apart so that a cron rerun where every file is already done
finishes in the time it takes to walk the folders: torch, transformers and the model load only once
a file actually needs the model (see `vl2cli.api.iter_outcomes`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .. import __version__
from ..output.record import FileStamp, Record, Request, ResumeKey, missing_file_key, resume_key
from ..errors import MediaError, UnreadableFileError, Vl2Error, record_error
from .modality import ModelTowers, check_requested_modality
from .segmenting import Segmenting
from .spec import RunOptions, TaskSpec

@dataclass
class FileOutcome:
    """One input file's fate: its record, or `record is None` when it was skipped as already done."""

    path: Path
    record: dict[str, Any] | None

    @property
    def skipped(self) -> bool:
        return self.record is None


@dataclass(frozen=True)
class PlannedFile:
    """A discovered file (or one `segment` of it, the record's object): either settled already
    (`outcome`: skipped, or unreadable) or work to do."""

    path: Path
    stamp: FileStamp | None
    outcome: FileOutcome | None = None
    segment: dict[str, Any] | None = None
    #: pending: the requests still to do for this file when a run asks several (ask with several
    #: questions), empty for the run's one request; settled: the request it settles
    requests: tuple[Request, ...] = ()

    @property
    def pending(self) -> bool:
        return self.outcome is None


#: The most files one SkippedFiles holds: a long stretch of done files reaches a progress line in steps.
SKIPPED_RUN_FILES = 512


@dataclass(frozen=True)
class SkippedFiles:
    """Whole files an earlier run finished, consecutive in the walk, as one entry.

    Why (issue 25): a rerun of a done archive should cost a stat and an index lookup per file, not a
    PlannedFile, a FileOutcome and a trip through every generator of the run path for each. Only
    `plan_files(..., skipped_runs=True)` makes them, for a run of one request without segments (the
    other runs keep a PlannedFile per skipped entry). It is settled and is its own outcome, so a runner
    passes it on as it passes any settled file's outcome; `iter_outcomes` expands it back into one
    skipped FileOutcome per file unless its caller counts runs (`BatchRun`, `--dry-run`).
    """

    #: absolute paths, as FileStamp holds them (a Path each would cost more than the stat)
    paths: tuple[str, ...]
    pending: ClassVar[bool] = False
    requests: ClassVar[tuple[Request, ...]] = ()

    @property
    def outcome(self) -> "SkippedFiles":
        return self

    def outcomes(self) -> Iterator[FileOutcome]:
        """One skipped outcome per file, as `iter_outcomes` documents them."""
        return (FileOutcome(Path(path), None) for path in self.paths)


#: What the planner yields: a file (or segment, or a file's questions), or a run of files already done.
Planned = PlannedFile | SkippedFiles

#: The model half of a run: (model, planned files, task, options, request) -> one outcome per file (a
#: SkippedFiles passed on as it came); the local pipeline (`pipeline.run_planned`) and
#: `vl2cli.runners.ray_engine.RayRunner` are the two.
Runner = Callable[[Any, Iterator[Planned], TaskSpec, RunOptions, Request], Iterator["FileOutcome | SkippedFiles"]]


def towers_of(model: Any) -> ModelTowers:
    """The towers of a loaded model or of a LazyModel's identity (both answer on `.config`)."""
    silent_video = "video" if model_family(model) == "videollama" else "av"
    return ModelTowers(model.config.has_vision, model.config.has_audio, silent_video)


def build_request(model: Any, task: TaskSpec, options: RunOptions) -> Request:
    """What every file of the run is asked; fails the run early for a modality the model cannot give."""
    return build_requests(model, task, options)[0]


def build_requests(model: Any, task: TaskSpec, options: RunOptions) -> tuple[Request, ...]:
    """One request per question (ask with several questions), else the run's one request."""
    check_requested_modality(options.modality, towers_of(model), model.model_id)
    family = model_family(model)
    return tuple(Request(task=task.task, prompt=prompt, labels=task.labels, model_id=model.model_id,
                         revision=model.revision, frames=model.num_frames, modality=options.modality,
                         family=family, sampling=task.sampling)
                 for prompt in task.prompts)


def model_family(model: Any) -> str:
    """The family of a loaded model or of a LazyModel's identity, without loading the latter."""
    return getattr(model.config, "family", None) or getattr(type(model), "family", "videollama2")


#: `known_segments(file_key, by)`: every segment of a file from earlier records, or None (see ResumeIndex).
KnownSegments = Callable[[ResumeKey, str], "list[dict[str, Any]] | None"]


def plan_files(paths: Iterable[str | Path], request: Request | Sequence[Request],
               is_done: Callable[[ResumeKey], bool] | None = None, *,
               segmenting: Segmenting | None = None,
               known_segments: KnownSegments | None = None, skipped_runs: bool = False) -> Iterator[Planned]:
    """Stat each path as it comes (streaming: the walk is never collected) and settle what needs no model.

    With several requests (questions) a file yields one settled entry per request already done (or
    per request, when it cannot be read), then one pending entry holding the requests left to do.
    With `segmenting`, each video or audio file becomes one planned item per segment (see `plan_segments`);
    the two do not combine yet (several questions about each segment): that is refused. With
    `skipped_runs`, a run of one request without segments yields the done files as `SkippedFiles`
    (at most SKIPPED_RUN_FILES each, in walk order with the other entries).
    """
    requests = (request,) if isinstance(request, Request) else tuple(request)
    several = len(requests) > 1
    if several and segmenting is not None:
        raise Vl2Error("several questions per file and segments do not combine yet: ask one question per run "
                       "when cutting files into segments")
    gather = skipped_runs and is_done is not None and not several and segmenting is None
    skipped: list[str] = []  # the done files not yet yielded, when gathered
    for path in paths:
        try:
            stamp = FileStamp.of(path)
        except OSError as exc:
            if skipped:
                yield SkippedFiles(tuple(skipped))
                skipped.clear()
            absolute = Path(path).absolute()
            for each in requests:
                if (isinstance(exc, (FileNotFoundError, NotADirectoryError)) and is_done is not None
                        and is_done(missing_file_key(str(absolute), each))):
                    # recorded as missing by an earlier run: not recorded again until it exists
                    yield PlannedFile(absolute, None, FileOutcome(absolute, None), requests=(each,))
                    continue
                error = record_error(UnreadableFileError.code, f"{path}: cannot read ({exc.strerror})")
                record = Record(each, path=str(absolute), stamp=None, vl2_version=__version__, error=error)
                yield PlannedFile(absolute, None, FileOutcome(absolute, record.as_dict()), requests=(each,))
            continue
        if gather:  # the nightly rerun's loop: a stat, a lookup, a list append
            if is_done(resume_key(stamp, requests[0])):  # type: ignore[misc]
                skipped.append(stamp.path)
                if len(skipped) >= SKIPPED_RUN_FILES:
                    yield SkippedFiles(tuple(skipped))
                    skipped.clear()
                continue
            if skipped:
                yield SkippedFiles(tuple(skipped))
                skipped.clear()
        pending = []
        # the caller's own Path when it is already the absolute one (no new object per file already done)
        where = path if isinstance(path, Path) and str(path) == stamp.path else Path(stamp.path)
        if gather:
            yield PlannedFile(where, stamp)
            continue
        for each in requests:
            if is_done is not None and is_done(resume_key(stamp, each)):
                yield PlannedFile(where, stamp, FileOutcome(where, None), requests=(each,))
            else:
                pending.append(each)
        if not pending:
            continue
        if segmenting is not None:
            yield from plan_segments(stamp, requests[0], segmenting, is_done, known_segments)
            continue
        yield PlannedFile(where, stamp, requests=tuple(pending) if several else ())
    if skipped:
        yield SkippedFiles(tuple(skipped))


def plan_segments(stamp: FileStamp, request: Request, segmenting: Segmenting,
                  is_done: Callable[[ResumeKey], bool] | None,
                  known_segments: KnownSegments | None) -> Iterator[PlannedFile]:
    """A file's segments, each skipped when an earlier run finished it.

    When earlier records name every segment of the file, they are taken from there (a rerun of a
    finished archive neither probes nor re-detects scenes); otherwise the file is cut now. A file that
    cannot be cut (unreadable, no duration) is one error record; an image is one whole-file item.
    """
    path = Path(stamp.path)
    segments = known_segments(resume_key(stamp, request), segmenting.by) if known_segments is not None else None
    if segments is None:
        try:
            cut = segmenting.cut(stamp.path)
        except MediaError as exc:
            record = Record(request, path=stamp.path, stamp=stamp, vl2_version=__version__,
                            error=exc.as_record_error()).as_dict()
            yield PlannedFile(path, stamp, FileOutcome(path, record))
            return
        if cut is None:
            yield PlannedFile(path, stamp)
            return
        segments = [segmenting.record_form(segment) for segment in cut]
    for segment in segments:
        if is_done is not None and is_done(resume_key(stamp, request, segment)):
            yield PlannedFile(path, stamp, FileOutcome(path, None), segment=segment)
        else:
            yield PlannedFile(path, stamp, segment=segment)
