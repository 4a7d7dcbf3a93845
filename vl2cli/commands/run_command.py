"""`vl2 caption|ask|classify`'s body: `vl2cli.run.BatchRun` (which owns the run) with only the UI around it.

The console and progress bar, the single-answer and subtitle-list printing, the summary line and the
exit code. Kept out of cli.py so the typer layer only parses flags, and so torch loads only at run time.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from ..discover import WalkWarning
from ..output.subtitles import subtitle_line
from ..output.writer import STDOUT_NAME
from ..run import BatchRun, NoticeLevel, RunObserver, lazy_model, listed_inputs, task_spec
from ..settings import Settings
from ..tasks.plan import SkippedFiles
from ..tasks.spec import TaskSpec
from .console import Console, LibraryLogs, library_logs_to
from .count_ahead import CountAhead
from .exit_codes import EXIT_OK, EXIT_SOME_FAILED
from .file_log import FileLog
from .readable import readable_text
from .summary import RunSummary


def _single_answer_mode(task: str, inputs: list[Path], settings: Settings, spec: TaskSpec, listed: bool) -> bool:
    """`vl2 ask clip.mp4 "q"`: one file, one question, stdout, no --json -> print just the answer."""
    return (task == "ask" and settings.out == STDOUT_NAME and not settings.json and not listed
            and len(spec.prompts) == 1 and len(inputs) == 1 and inputs[0].is_file())


def _subtitle_list_mode(settings: Settings, stdout: TextIO, single: bool) -> bool:
    """`vl2 caption long.mp4 --segment 60s` on a terminal: a subtitle-like list instead of JSON lines."""
    return bool(settings.segment) and settings.out == STDOUT_NAME and not settings.json and (single or stdout.isatty())


class _ConsoleObserver(RunObserver):
    """The run's events on the console: walk warnings counted for the summary, notices as `vl2:` lines."""

    def __init__(self, console: Console, summary: RunSummary) -> None:
        self.console, self.summary = console, summary
        self.library_logs: LibraryLogs | None = None  # set while the run's log routing is in place

    def on_walk_warning(self, warning: WalkWarning) -> None:
        self.summary.unreadable_folders += warning.reason == "unreadable_folder"
        self.summary.bad_list_entries += warning.reason == "bad_list_entry"
        self.console.log(f"vl2: warning: {warning.message}", logging.WARNING)

    def on_walk_end(self, total: int) -> None:
        self.console.set_total(total)

    def on_batch(self, paths: Sequence[Path]) -> None:
        self.console.working_on(paths)

    def on_notice(self, level: NoticeLevel, message: str) -> None:
        self.console.log(f"vl2: {message}" if level == "info" else f"vl2: {level}: {message}", _LEVELS[level])

    def before_model_load(self) -> None:
        if self.library_logs is not None:
            import transformers  # noqa: F401  (the load imports it anyway; importing adds its own stderr handler,
            self.library_logs.adopt()  # which is set aside here, before the load's first warning)


#: A notice's level as logging's.
_LEVELS: dict[NoticeLevel, int] = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def execute(task: str, inputs: list[Path], settings: Settings, *, prompt: str | None = None,
            questions: Sequence[str] = (), dry_run: bool = False, stdin: TextIO | None = None,
            stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run caption/ask/classify as the CLI does (`vl2cli.run.BatchRun` with a console around it);
    returns the exit code (Vl2Error propagates: fatal)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    spec = task_spec(task, settings, prompt=prompt, questions=questions)
    inputs, listed = listed_inputs(inputs, settings, stdin or sys.stdin)
    if dry_run:
        return _dry_run(inputs, listed, spec, settings, stdout=stdout, stderr=stderr)
    console = Console(quiet=settings.quiet, stderr=stderr, stdout=stdout, log_level=settings.log_level)
    console.outcomes_per_file = max(len(spec.questions), 1)
    summary = RunSummary()
    if settings.segment:
        summary.unit = "segments"
    single = _single_answer_mode(task, inputs, settings, spec, listed is not None)
    as_list = _subtitle_list_mode(settings, stdout, single)
    single = single and not as_list
    several_inputs = listed is not None or len(inputs) > 1 or not inputs[0].is_file()
    # on a terminal, records as text (`path: caption`, label tables); JSON lines with --json or when piped
    readable = not (single or as_list or settings.json) and settings.out == STDOUT_NAME and stdout.isatty()
    heading = None  # the file whose segments the subtitle-like list shows now
    file_log = FileLog(console.log) if settings.log_files else None
    observer = _ConsoleObserver(console, summary)
    # JSON lines on stdout print through the console too (above the progress line); Ray needs the real stream
    records_to = console.results_stream() if settings.engine != "ray" else stdout
    run = BatchRun(spec, inputs, settings, listed=listed, observer=observer,
                   write_jsonl=not (single or as_list or readable), stdout=records_to)  # type: ignore[arg-type]
    counter = None
    if listed is None and run.sharded is None:  # (a list is read once, by the run; a shard keeps only some files)
        counter = CountAhead(inputs, walk=run.walk, on_count=console.estimate_total).start()
    try:
        with library_logs_to(console) as observer.library_logs:
            with run, console.start():
                if settings.engine == "ray":
                    console.stdout = run.stdout  # Ray's private copy of fd 1
                for outcome in run.outcomes():
                    if isinstance(outcome, SkippedFiles):  # done earlier: counted, nothing to print
                        summary.count_skipped(len(outcome.paths))
                        console.advance(summary, Path(outcome.paths[-1]), None)
                        continue
                    record = outcome.record
                    summary.count(record)
                    if record is not None and record["error"] is not None:
                        console.log(f"vl2: failed: {record['error']['message']} [{record['error']['code']}]",
                                    logging.ERROR)
                    if file_log is not None and record is not None:
                        file_log.finished(record)
                    if as_list and record is not None:
                        if several_inputs and record["path"] != heading:  # a heading per file
                            heading = record["path"]
                            console.result(f"== {heading}")
                        console.result(subtitle_line(record))
                    elif single and record is not None and record["error"] is None:
                        console.result(record["output"])
                    elif readable and record is not None:
                        if (text := readable_text(record, with_question=len(spec.questions) > 1)) is not None:
                            console.result(text)
                    console.advance(summary, outcome.path, record)
    finally:
        if counter is not None:
            counter.stop()
    return _finish(run, summary, console, single)


def _dry_run(inputs: list[Path], listed: Iterator[str] | None, spec: TaskSpec, settings: Settings, *,
             stdout: TextIO, stderr: TextIO) -> int:
    from ..runners.shards import plan_sharded_output
    from .dry_run import dry_run as plan_only

    sharded = plan_sharded_output(settings.shard, settings.out, inputs, dry_run=True)
    if sharded is not None:  # the shard's own files, resumed from its own part file
        settings = dataclasses.replace(settings, out=str(sharded.part))
    return plan_only(inputs, listed, spec, settings, lazy_model(settings), stdout=stdout, stderr=stderr,
                     keep=sharded.keeps if sharded is not None else None)


def _finish(run: BatchRun, summary: RunSummary, console: Console, single: bool) -> int:
    """The summary line and the exit code (a complete shard exits 0: its errors are counted elsewhere)."""
    summary.failed_in_output = run.result.failed_in_output
    summary.pending_in_output = run.result.pending_in_output
    summary.subtitles_refused = run.result.subtitles_refused
    sharded = run.sharded
    if sharded is not None and summary.total == 0:
        console.log(f"vl2: shard {sharded.shard}: none of the inputs' files belong to this shard; it is complete")
    elif summary.total == 0:
        console.log("vl2: warning: no media files found in the inputs", logging.WARNING)
    code = summary.exit_code()
    if not single:  # a good run's summary is info (--quiet: nothing); one that failed is always said
        console.log(summary.line(), logging.INFO if code == EXIT_OK else logging.ERROR)
    if run.result.shard_complete and code == EXIT_SOME_FAILED:
        # every file of the shard has its record: the job step succeeded (Slurm's afterok chains on it);
        # the files ending in an error are counted in the marker and by `vl2 shards`
        console.log(f"vl2: shard {sharded.shard} is complete ({sharded.shard.marker_name}): exit 0; "
                    f"{summary.failed_in_output or summary.failed} file(s) ending in an error are counted there "
                    f"and by `vl2 shards`")
        code = EXIT_OK
    return code


__all__ = ["execute"]
