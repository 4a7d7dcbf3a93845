"""One whole run of caption/ask/classify as a library call (`BatchRun`), and a run's settings as the
library's run objects (task spec, run options, inputs, the lazily loaded model).

The way whisper's `transcribe()` serves its `cli()`: `vl2cli.commands.run_command` wraps `BatchRun`
with only what a terminal needs (console, progress bar, the printing modes, the summary line, the exit
code), and `vl2cli.caption/ask/classify` (`vl2cli.api.iter_records`) call it with no output file.
Nothing here prints or imports typer/rich; the API layer: it chooses the engine (runner).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from .discover import WalkOptions, WalkWarning
from .errors import InputError
from .input_lists import STDIN_NAME, read_path_list, split_stdin_marker
from .output.lock import OutputLock
from .output.record import Sampling, key_of_record
from .output.resume import ResumeIndex
from .output.subtitles import SubtitleFiles
from .output.writer import STDOUT_NAME, JsonlWriter
from .settings import MAX_LABELS, Settings
from .tasks.lazy_model import LazyModel
from .tasks.outcomes import iter_outcomes
from .tasks.plan import FileOutcome, Runner, SkippedFiles
from .tasks.prompts import parse_labels
from .tasks.segmenting import Segmenting
from .tasks.spec import RunOptions, TaskSpec, sampling_from

log = logging.getLogger(__name__)


def sampling_of(settings: Settings) -> Sampling | None:
    """The run's sampling (None: greedy), from --temperature, --top-p and --seed."""
    return sampling_from(settings.temperature, settings.top_p, settings.seed)


def task_spec(task: str, settings: Settings, *, prompt: str | None = None, questions: Sequence[str] = ()) -> TaskSpec:
    """The TaskSpec a command's settings ask for (ask: `prompt`, or several `questions`)."""
    labels = tuple(parse_labels(settings.labels)) if task == "classify" else None
    if labels is not None and len(labels) > MAX_LABELS:
        raise InputError(f"labels: at most {MAX_LABELS} labels (got {len(labels)})")
    questions = tuple(dict.fromkeys(questions))  # `-q same -q same` asks it once (one record per file and question)
    if task == "ask" and len(questions) == 1:
        prompt, questions = questions[0], ()
    sampling = sampling_of(settings) if task != "classify" else None
    return TaskSpec(task, prompt=prompt if task == "ask" else settings.prompt if task == "caption" else None,  # type: ignore[arg-type]
                    labels=labels, top_k=settings.top_k, max_new_tokens=settings.max_new_tokens,
                    questions=tuple(questions), sampling=sampling)


def listed_inputs(inputs: list[Path], settings: Settings, stdin: TextIO) -> tuple[list[Path], Iterator[str] | None]:
    """The inputs without `-`, and the listed paths (`--files-from`, then `-`: stdin), read lazily."""
    named, from_stdin = split_stdin_marker(inputs)
    lists = []
    if settings.files_from is not None:
        lists.append(read_path_list(settings.files_from, stdin=stdin))
    if from_stdin and settings.files_from != STDIN_NAME:
        lists.append(read_path_list(STDIN_NAME, stdin=stdin))
    if not named and not lists:
        raise InputError("no inputs: name files or folders, - to read paths from stdin, or a list of paths in the files_from setting")
    return [Path(p) for p in named], itertools.chain.from_iterable(lists) if lists else None


def segmenting_of(settings: Settings) -> Segmenting | None:
    """The run's `--segment` rule, checked now (a bad length is fatal before any file is read)."""
    if not settings.segment:
        return None
    return Segmenting.parse(settings.segment, overlap=settings.segment_overlap, min_length=settings.segment_min,
                            max_length=settings.segment_max)


def run_options(settings: Settings) -> RunOptions:
    return RunOptions(modality=settings.modality, batch_size=settings.batch_size, workers=settings.workers,
                      decode_timeout=settings.decode_timeout, video_backend=settings.video_backend,
                      segmenting=segmenting_of(settings))


def walk_options(settings: Settings) -> WalkOptions:
    """Which files the run's walk picks up, from the input settings (--recursive, --include, --exclude, --kind)."""
    return WalkOptions(recursive=settings.recursive, include=tuple(settings.include),
                       exclude=tuple(settings.exclude), kinds=tuple(settings.kinds))


def lazy_model(settings: Settings, *, before_load: Callable[[], None] | None = None) -> LazyModel:
    """The checkpoint's identity now (no torch); its weights when a file first needs them (`before_load`
    first, the libraries imported: a console takes their loggers over)."""
    from .loading import v1_locations
    from .runners.engines import model_load_options

    def load() -> Any:
        from .loading import load_model

        if before_load is not None:
            before_load()
        return load_model(**model_load_options(settings))  # type: ignore[arg-type]

    return LazyModel(settings.model, revision=settings.revision, frames=settings.frames, load=load,
                     locations=v1_locations(home=settings.home, v1_llm=settings.v1_llm,
                                            v1_lavis_dir=settings.v1_lavis_dir))




NoticeLevel = Literal["info", "warning", "error"]


class RunObserver:
    """What a run tells whoever drives it, so a command line can draw progress without the library
    importing rich. The defaults log (a library reports through logging, not stderr); the CLI's console
    overrides them (`vl2cli.commands.run_command`)."""

    def on_walk_warning(self, warning: WalkWarning) -> None:
        """A folder that cannot be read, a list entry that cannot be a path: files the walk lost."""
        log.warning(warning.message)

    def on_walk_end(self, total: int) -> None:
        """The walk has found every file (`total`); a progress bar's total."""

    def on_batch(self, paths: Sequence[Path]) -> None:
        """The model starts on a batch of these files."""

    def on_notice(self, level: NoticeLevel, message: str) -> None:
        """Something about the run as a whole (its shard, a repaired output, a subtitle file refused)."""
        getattr(log, level)(message)

    def before_model_load(self) -> None:
        """The weights are about to load (torch and transformers are imported by now)."""


@dataclass
class RunResult:
    """What a finished run left behind, beyond its outcomes (for the summary and the exit code)."""

    #: outcomes the run yielded (files, or segments), skipped ones included
    outcomes: int = 0
    unreadable_folders: int = 0
    #: files of the whole output file whose latest record is an error (None: no output file)
    failed_in_output: int | None = None
    #: of those, transient failures a later run tries again
    pending_in_output: int = 0
    subtitles_refused: int = 0
    #: the shard's marker was written: every file of the shard has its record
    shard_complete: bool = False


class BatchRun:
    """One whole run of caption/ask/classify: inputs, shard, engine, lock, resume, JSONL writer, subtitles.

        with BatchRun(spec, paths, settings, listed=listed, observer=observer) as run:
            for outcome in run.outcomes():
                ...                      # the CLI prints and counts (SkippedFiles: a run of done files);
                                         # the records are already written
        run.result                       # failed_in_output, shard_complete, ...

    `write_jsonl=False` keeps the records out of any file (the CLI's single-answer and subtitle-list
    modes, and the library's `caption/ask/classify`, which return them); `options` replaces the run
    options the settings ask for (the library passes its own). `stdout` is where `out` = "-" writes;
    read `run.stdout` for it once entered (the Ray engine swaps it for a private copy of fd 1).
    """

    def __init__(self, task: TaskSpec, paths: Sequence[Path], settings: Settings, *,
                 listed: Iterable[str] | None = None, model: Any = None, observer: RunObserver | None = None,
                 options: RunOptions | None = None, write_jsonl: bool = True, stdout: TextIO | None = None) -> None:
        from .runners.shards import plan_sharded_output

        self.task, self.paths, self.listed = task, list(paths), listed
        self.observer = observer or RunObserver()
        self.sharded = plan_sharded_output(settings.shard, settings.out, self.paths)
        if self.sharded is not None:  # from here on the run's output is the shard's part file
            settings = dataclasses.replace(settings, out=str(self.sharded.part))
        self.settings = settings
        self.walk = walk_options(settings)
        self.model = model  # None: `lazy_model(settings)` once the run starts
        self.options = dataclasses.replace(options or run_options(settings), on_batch=self.observer.on_batch)
        self.write_jsonl = write_jsonl
        self.stdout = stdout or sys.stdout
        self.result = RunResult()
        self.index: ResumeIndex | None = None
        self._writer: JsonlWriter | None = None
        self._subtitles: SubtitleFiles | None = None
        self._runner: Runner | None = None
        self._stack = ExitStack()

    def __enter__(self) -> "BatchRun":
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _open(self) -> None:
        from .runners.engines import engine_runner

        settings, stack, notice = self.settings, self._stack, self.observer.on_notice
        if self.sharded is not None:
            notice("info", f"shard {self.sharded.shard} (array index {self.sharded.array_index}) of "
                           f"{self.sharded.folder.root} -> {self.sharded.part.name}")
        if settings.engine == "ray":  # Ray's console lines (raylet, C++, its processes) never reach the records
            from .runners.ray_engine import records_stdout

            self.stdout = stack.enter_context(records_stdout(self.stdout))
        self._runner = stack.enter_context(engine_runner(settings))
        if settings.out != STDOUT_NAME:
            stack.enter_context(OutputLock(settings.out))
            self.index = ResumeIndex.from_output(settings.out, keep=True)  # under the lock: it may write the sidecar
            stack.callback(self.index.save)  # before the lock is released: the sidecar catches up with this run
            if (skipped := self.index.skipped.describe(settings.out)) is not None:
                notice("warning", skipped)
        if self.write_jsonl:
            self._writer = stack.enter_context(JsonlWriter(settings.out, stdout=self.stdout))
        if settings.format != "jsonl":
            self._subtitles = SubtitleFiles(settings.format, out_dir=settings.out_dir,  # type: ignore[arg-type]
                                            earlier=settings.out if self.index is not None else None,
                                            overwrite=settings.overwrite,
                                            on_refused=lambda message: notice("error", message))
            stack.callback(self._subtitles.close)
        if self._writer is not None and self._writer.repaired_partial_line:
            notice("warning", f"{settings.out} ended in a partial line (an interrupted run); a newline was appended")

    def outcomes(self) -> Iterator[FileOutcome | SkippedFiles]:
        """One outcome per file (and question, and segment), its record already in the output, and the
        files already done as `SkippedFiles` runs (a count's worth of work each: see `tasks.plan`);
        once they are all out (still under the lock), the shard is marked complete when it is."""
        settings, index = self.settings, self.index
        is_done = known = None
        if index is not None and not settings.overwrite:
            is_done = lambda key: index.is_done(key, retry_failed=settings.retry_failed,  # noqa: E731
                                                  max_new_tokens=settings.max_new_tokens)
            known = index.known_segments
        model = self.model if self.model is not None else lazy_model(settings, before_load=self.observer.before_model_load)
        for outcome in iter_outcomes(model, self.paths, self.task, self.options, is_done=is_done,
                                     known_segments=known, on_warning=self._on_walk_warning,
                                     on_walk_end=self.observer.on_walk_end, walk=self.walk, listed=self.listed,
                                     keep=self.sharded.keeps if self.sharded is not None else None,
                                     runner=self._runner, skipped_runs=True):
            if isinstance(outcome, SkippedFiles):
                self.result.outcomes += len(outcome.paths)
                if self._subtitles is not None:
                    for path in outcome.paths:
                        self._subtitles.add(path, None)
                yield outcome
                continue
            self.result.outcomes += 1
            record = outcome.record
            if self._subtitles is not None:
                self._subtitles.add(outcome.path, record)
            if record is not None and self._writer is not None:
                if index is not None:
                    _count_attempt(record, index)
                    index.add(record)
                self._writer.write(record)
            yield outcome
        if self.sharded is not None and index is not None:
            self.result.shard_complete = self.sharded.finish(files=self.result.outcomes,
                                                             failed_in_part=index.still_failed(),
                                                             complete=not self.result.unreadable_folders)

    def _on_walk_warning(self, warning: WalkWarning) -> None:
        self.result.unreadable_folders += warning.reason == "unreadable_folder"
        self.observer.on_walk_warning(warning)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        if self.index is not None:
            self.result.failed_in_output = self.index.still_failed()
            self.result.pending_in_output = self.index.pending_retry()
        if self._subtitles is not None:
            self.result.subtitles_refused = len(self._subtitles.refused)


def _count_attempt(record: dict[str, Any], index: ResumeIndex) -> None:
    """An error record says which run for this file and request it is (transient errors are retried)."""
    if record["error"] is not None:
        key = key_of_record(record)
        if key is not None:
            record["error"]["attempt"] = index.next_attempt(key)


__all__ = ["BatchRun", "RunObserver", "RunResult", "lazy_model", "listed_inputs", "run_options", "sampling_of",
           "segmenting_of", "task_spec", "walk_options"]
