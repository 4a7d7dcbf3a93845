"""One CLI command run end to end: discover, lock and resume, load the model, process, report.

Kept out of cli.py so the typer layer only parses flags, and so everything here can import torch
lazily at run time without slowing `vl2 --help`.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from ..discover import WalkWarning
from ..errors import InputError
from ..input_lists import STDIN_NAME, read_path_list, split_stdin_marker
from ..output.lock import OutputLock
from ..output.record import Sampling, key_of_record
from ..output.resume import ResumeIndex
from ..output.subtitles import SubtitleFiles, subtitle_line
from ..output.writer import STDOUT_NAME, JsonlWriter
from ..settings import MAX_LABELS, Settings
from .exit_codes import EXIT_OK, EXIT_SOME_FAILED
from .file_log import FileLog
from .lazy_model import LazyModel
from .prompts import parse_labels
from .segmenting import Segmenting
from .spec import RunOptions, TaskSpec, sampling_from
from .summary import RunSummary


#: The end of the current file's name the progress bar shows.
PROGRESS_NAME_CHARS = 40


def _one_line(message: str) -> str:
    """A log line stays one line: a file name holding a newline cannot forge a summary line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class _Console:
    """stderr logging that cooperates with the progress bar (rich) when one is shown."""

    def __init__(self, *, quiet: bool, stderr: TextIO) -> None:
        self.stderr = stderr
        self.progress: Any = None
        self.task_id: Any = None
        self.show_progress = not quiet and stderr.isatty()
        self.total: int | None = None
        self.working: str | None = None  # the batch the model is working on, as the bar names it

    def log(self, message: str) -> None:
        message = _one_line(message)
        if self.progress is not None:
            self.progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stderr, flush=True)

    def start(self) -> Any:
        """The progress bar; its total is unknown while the folders are still being walked."""
        if not self.show_progress:
            return nullcontext()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=Console(file=self.stderr), transient=True)
        self.task_id = self.progress.add_task("files", total=None, rate="")
        return self.progress

    def set_total(self, total: int) -> None:
        """Called (from the decode feeder thread) when the walk has found every file."""
        self.total = total

    def working_on(self, paths: Sequence[Path]) -> None:
        """The model starts on a batch: the bar names its first file (and how many more are in it)."""
        if self.progress is not None and paths:
            self.working = _one_line(paths[0].name)[-PROGRESS_NAME_CHARS:] + (f" +{len(paths) - 1}" if len(paths) > 1 else "")
            self.progress.update(self.task_id, description=self.working)

    def advance(self, summary: RunSummary, path: Path | None = None) -> None:
        """One more file finished. The bar names the file being worked on (`working_on`), or, when no
        batch was announced (e.g. another engine does the model work), the file that just finished."""
        if self.progress is not None:
            rate = f"{summary.done / summary.seconds:.2f} files/s" if summary.seconds > 0 else ""
            description = self.working or (_one_line(path.name)[-PROGRESS_NAME_CHARS:] if path is not None else "files")
            self.progress.update(self.task_id, advance=1, rate=rate, total=self.total, description=description)


class _ConsoleLogHandler(logging.Handler):
    """Library log lines (e.g. which encoder backend was chosen and why) as `vl2: ...` stderr lines."""

    def __init__(self, console: _Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "vl2: warning: " if record.levelno >= logging.WARNING else "vl2: "
        self.console.log(prefix + record.getMessage())


@contextmanager
def _library_logs_to(console: _Console):
    """Route the `vl2cli` loggers to the console for one run (quiet too: cron logs want these lines)."""
    logger = logging.getLogger("vl2cli")
    handler = _ConsoleLogHandler(console)
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


def _single_answer_mode(task: str, inputs: list[Path], settings: Settings, spec: TaskSpec, listed: bool) -> bool:
    """`vl2 ask clip.mp4 "q"`: one file, one question, stdout, no --json -> print just the answer."""
    return (task == "ask" and settings.out == STDOUT_NAME and not settings.json and not listed
            and len(spec.prompts) == 1 and len(inputs) == 1 and inputs[0].is_file())


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
        raise InputError("no inputs: name files or folders, - to read paths from stdin, or --files-from LIST")
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


def _subtitle_list_mode(settings: Settings, stdout: TextIO, single: bool) -> bool:
    """`vl2 caption long.mp4 --segment 60s` on a terminal: a subtitle-like list instead of JSON lines."""
    return bool(settings.segment) and settings.out == STDOUT_NAME and not settings.json and (single or stdout.isatty())


def lazy_model(settings: Settings) -> LazyModel:
    """The checkpoint's identity now (no torch); its weights when a file first needs them."""
    def load() -> Any:
        from ..api import load_model

        return load_model(settings.model, revision=settings.revision, device=settings.device, dtype=settings.dtype,
                          frames=settings.frames, encoder_backend=settings.encoder_backend,
                          device_map=settings.device_map, export_dir=settings.export_dir, engine_dir=settings.engine_dir)

    return LazyModel(settings.model, revision=settings.revision, frames=settings.frames, load=load)


def _count_attempt(record: dict[str, Any], index: ResumeIndex) -> None:
    """An error record says which run for this file and request it is (transient errors are retried)."""
    if record["error"] is not None:
        key = key_of_record(record)
        if key is not None:
            record["error"]["attempt"] = index.next_attempt(key)


def execute(task: str, inputs: list[Path], settings: Settings, *, prompt: str | None = None,
            questions: Sequence[str] = (), dry_run: bool = False, stdin: TextIO | None = None,
            stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run caption/ask/classify as the CLI does; returns the exit code (Vl2Error propagates: fatal)."""
    from ..api import iter_outcomes
    from ..runners.engines import engine_runner
    from ..runners.shards import plan_sharded_output

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    spec = task_spec(task, settings, prompt=prompt, questions=questions)
    inputs, listed = listed_inputs(inputs, settings, stdin or sys.stdin)
    if dry_run:
        from .dry_run import dry_run as plan_only

        sharded = plan_sharded_output(settings.shard, settings.out, inputs, dry_run=True)
        if sharded is not None:  # the shard's own files, resumed from its own part file
            settings = dataclasses.replace(settings, out=str(sharded.part))
        return plan_only(inputs, listed, spec, settings, lazy_model(settings), stdout=stdout, stderr=stderr,
                         keep=sharded.keeps if sharded is not None else None)
    console = _Console(quiet=settings.quiet, stderr=stderr)
    sharded = plan_sharded_output(settings.shard, settings.out, inputs)
    if sharded is not None:  # from here on the run's output is the shard's part file
        settings = dataclasses.replace(settings, out=str(sharded.part))
    summary = RunSummary()
    options = dataclasses.replace(run_options(settings), on_batch=console.working_on)
    single = _single_answer_mode(task, inputs, settings, spec, listed is not None)
    as_list = _subtitle_list_mode(settings, stdout, single)
    single = single and not as_list
    several_inputs = listed is not None or len(inputs) > 1 or not inputs[0].is_file()
    heading = None  # the file whose segments the subtitle-like list shows now
    if options.segmenting is not None:
        summary.unit = "segments"
    file_log = FileLog(console.log) if settings.log_files else None

    def on_warning(warning: WalkWarning) -> None:
        summary.unreadable_folders += warning.reason == "unreadable_folder"
        summary.bad_list_entries += warning.reason == "bad_list_entry"
        console.log(f"vl2: warning: {warning.message}")

    with ExitStack() as stack:
        stack.enter_context(_library_logs_to(console))
        if sharded is not None:
            console.log(f"vl2: shard {sharded.shard} (array index {sharded.array_index}) of {sharded.folder.root} "
                        f"-> {sharded.part.name}")
        if settings.engine == "ray":  # Ray's console lines (raylet, C++, its processes) never reach the records
            from ..runners.ray_engine import records_stdout

            stdout = stack.enter_context(records_stdout(stdout))
        runner = stack.enter_context(engine_runner(settings))
        index = None
        if settings.out != STDOUT_NAME:
            stack.enter_context(OutputLock(settings.out))
            index = ResumeIndex.from_output(settings.out, keep=True)  # under the lock: it may write the sidecar
            stack.callback(index.save)  # before the lock is released: the sidecar catches up with this run's records
            if (skipped := index.skipped.describe(settings.out)) is not None:
                console.log(f"vl2: warning: {skipped}")
        writer = None if single or as_list else stack.enter_context(JsonlWriter(settings.out, stdout=stdout))
        subtitles = None
        if settings.format != "jsonl":
            subtitles = SubtitleFiles(settings.format, out_dir=settings.out_dir,  # type: ignore[arg-type]
                                      earlier=settings.out if index is not None else None,
                                      overwrite=settings.overwrite,
                                      on_refused=lambda message: console.log(f"vl2: error: {message}"))
            stack.callback(subtitles.close)
        if writer is not None and writer.repaired_partial_line:
            console.log(f"vl2: warning: {settings.out} ended in a partial line (an interrupted run); a newline was appended")
        is_done = None
        if index is not None and not settings.overwrite:
            is_done = lambda key: index.is_done(key, retry_failed=settings.retry_failed)  # noqa: E731
        known = index.known_segments if index is not None and not settings.overwrite else None
        outcomes = iter_outcomes(lazy_model(settings), inputs, spec, options, is_done=is_done, known_segments=known,
                                 on_warning=on_warning, on_walk_end=console.set_total, recursive=settings.recursive, include=settings.include,
                                 exclude=settings.exclude, kinds=settings.kinds, listed=listed,
                                 keep=sharded.keeps if sharded is not None else None, runner=runner)
        with console.start():
            for outcome in outcomes:
                record = outcome.record
                summary.count(record)
                if record is not None and record["error"] is not None:
                    console.log(f"vl2: failed: {record['error']['message']} [{record['error']['code']}]")
                if file_log is not None and record is not None:
                    file_log.finished(record)
                if subtitles is not None:
                    subtitles.add(outcome.path, record)
                if as_list:
                    if record is not None:
                        if several_inputs and record["path"] != heading:  # a heading per file
                            heading = record["path"]
                            print(f"== {heading}", file=stdout)
                        print(subtitle_line(record), file=stdout, flush=True)
                elif single:
                    if record is not None and record["error"] is None:
                        print(record["output"], file=stdout, flush=True)
                elif record is not None:
                    if index is not None:
                        _count_attempt(record, index)
                        index.add(record)
                    writer.write(record)
                console.advance(summary, outcome.path)
        shard_complete = False
        if sharded is not None and index is not None:  # still under the lock: no rerun can start in between
            shard_complete = sharded.finish(files=summary.total, failed_in_part=index.still_failed(),
                                            complete=not summary.unreadable_folders)
    if index is not None:
        summary.failed_in_output = index.still_failed()
    if subtitles is not None:
        summary.subtitles_refused = len(subtitles.refused)
    if sharded is not None and summary.total == 0:
        console.log(f"vl2: shard {sharded.shard}: none of the inputs' files belong to this shard; it is complete")
    elif summary.total == 0:
        console.log("vl2: warning: no media files found in the inputs")
    if not single:
        console.log(summary.line())
    code = summary.exit_code()
    if shard_complete and code == EXIT_SOME_FAILED:
        # every file of the shard has its record: the job step succeeded (Slurm's afterok chains on it);
        # the files ending in an error are counted in the marker and by `vl2 shards`
        console.log(f"vl2: shard {sharded.shard} is complete ({sharded.shard.marker_name}): exit 0; "
                    f"{summary.failed_in_output or summary.failed} file(s) ending in an error are counted there "
                    f"and by `vl2 shards`")
        code = EXIT_OK
    return code


__all__ = ["execute", "lazy_model", "run_options", "task_spec", "EXIT_OK", "EXIT_SOME_FAILED"]
