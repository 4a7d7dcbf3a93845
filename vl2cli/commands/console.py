"""The run's terminal: log lines, results and, on a terminal, a live progress line they print above.

Kept apart from the run command's body so the only rich import of a run sits in the commands layer.
On a terminal rich draws the progress line on stderr; anything printed while it is shown (a result on
stdout, a log line) must go through rich's console, which clears the line, prints, and redraws it —
written straight to the terminal it would be glued to the spinner or overwritten by the next refresh.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from .summary import RunSummary


#: The end of the current file's name the progress bar shows.
PROGRESS_NAME_CHARS = 40
#: `log_level` names to logging's levels.
LOG_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
#: Loggers of the libraries a run calls whose lines (deprecation notices and the like) obey vl2's log level;
#: `py.warnings` is where `logging.captureWarnings` sends Python's warnings.
LIBRARY_LOGGERS = ("transformers", "huggingface_hub", "torch", "py.warnings")


def one_line(message: str) -> str:
    """A log line stays one line: a file name holding a newline cannot forge a summary line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


#: C0 and C1 control characters but newline and tab: on a terminal they move the cursor, clear the screen or
#: retitle the window, and a random-weight (or any) model's answer may hold them.
_TERMINAL_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0)) if chr(code) not in "\n\t"}


def terminal_safe(text: str) -> str:
    """Text a terminal shows rather than obeys (control characters escaped, lines kept): an answer that
    holds ESC or CR must not overwrite the screen or the results above it."""
    return text.translate(_TERMINAL_CONTROLS)


def log_level_of(log_level: str | None, *, quiet: bool) -> int:
    """The level below which stderr lines are dropped: the setting, else (auto) info, error when quiet."""
    if log_level in (None, "auto"):
        return logging.ERROR if quiet else logging.INFO
    return LOG_LEVEL_NUMBERS[log_level]


def same_terminal(first: TextIO, second: TextIO) -> bool:
    """Both streams are the one terminal (stdout and stderr of a shell), so either may print the other's lines."""
    try:
        if not (first.isatty() and second.isatty()):
            return False
        a, b = os.fstat(first.fileno()), os.fstat(second.fileno())
    except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (a test's StringIO)
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)


class Console:
    """stderr logging and stdout results that cooperate with the progress line (rich) when one is shown."""

    def __init__(self, *, quiet: bool, stderr: TextIO, stdout: TextIO | None = None,
                 log_level: str | None = None) -> None:
        self.stderr = stderr
        self.stdout = stdout
        self.level = log_level_of(log_level, quiet=quiet)
        self.progress: Any = None
        self.task_id: Any = None
        self.show_progress = not quiet and stderr.isatty()
        self.total: int | None = None
        self.walk_counted = False  # the walk itself reported the total: an estimate ahead of it is not taken
        self.working: str | None = None  # the batch the model is working on, as the bar names it
        self.files_done = 0  # files finished: in a --segment run each has several outcomes
        self.segment_path: Path | None = None  # the file whose segments come now, and the part of it done
        self.segment_part = 0.0
        self.outcomes_per_file = 1  # an ask with several questions has one outcome per file and question

    def shows(self, level: int) -> bool:
        return level >= self.level

    def log(self, message: str, level: int = logging.INFO) -> None:
        """One stderr line, if the log level keeps it."""
        if not self.shows(level):
            return
        message = one_line(message)
        if self.progress is not None:
            self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True, emoji=False)
        else:
            print(message, file=self.stderr, flush=True)

    def result(self, text: str) -> None:
        """A result for stdout (an answer, a caption, a JSON record), printed above the progress line
        when that line shares stdout's terminal (control characters escaped on a terminal); elsewhere (a
        pipe, a file) written as is."""
        stdout = self.stdout
        if stdout is not None and stdout.isatty():
            text = terminal_safe(text)
        if self.progress is not None and stdout is not None and same_terminal(stdout, self.stderr):
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)
        else:
            print(text, file=stdout, flush=True)

    def results_stream(self) -> "ResultStream":
        """A stream for a writer of whole lines (the JSONL writer on stdout) that prints them as `result`s."""
        return ResultStream(self)

    def start(self) -> Any:
        """The progress line: files (or segments) done of the total, the rate and the time left."""
        if not self.show_progress:
            return nullcontext()
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}{task.fields[rate]}"), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=RichConsole(file=self.stderr), transient=True)
        self.task_id = self.progress.add_task("files", total=self.total, rate="", unit="files")
        return self.progress

    def set_total(self, total: int) -> None:
        """Called (from the decode feeder thread) when the walk has found every file: the exact total."""
        self.walk_counted = True
        self._show_total(total)

    def estimate_total(self, total: int) -> None:
        """Called (from the counting thread) with a count of the inputs' files made ahead of the walk."""
        if not self.walk_counted:
            self._show_total(total)

    def _show_total(self, files: int) -> None:
        total = files * self.outcomes_per_file
        self.total = total
        if self.progress is not None:  # rich's Progress takes updates from any thread (it holds a lock)
            self.progress.update(self.task_id, total=total)

    def working_on(self, paths: Sequence[Path]) -> None:
        """The model starts on a batch: the bar names its first file (and how many more are in it)."""
        if self.progress is not None and paths:
            self.working = one_line(paths[0].name)[-PROGRESS_NAME_CHARS:] + (f" +{len(paths) - 1}" if len(paths) > 1 else "")
            self.progress.update(self.task_id, description=self.working)

    def _files_completed(self, path: Path | None, record: dict | None) -> float:
        """Files done, the file being cut into segments counting the part of it done (the bar's unit is files:
        how many segments a file has is known only once it is probed). Outcomes come file by file, so a
        new path means the one before is finished; a skipped segment (no record) keeps its file's part."""
        if path != self.segment_path:
            if self.segment_path is not None:
                self.files_done += 1
            self.segment_path, self.segment_part = path, 0.0
        segment = record.get("segment") if record is not None else None
        if segment is not None:
            self.segment_part = (segment["index"] + 1) / max(int(segment["count"]), 1)
        elif record is not None:  # a whole file's record (e.g. one that could not be read)
            self.segment_part = 1.0
        return self.files_done + min(self.segment_part, 1.0)

    def advance(self, summary: RunSummary, path: Path | None = None, record: dict | None = None) -> None:
        """One more outcome. The bar names the file being worked on (`working_on`), or, when no batch was
        announced (e.g. another engine does the model work), the file that just finished. In a --segment run
        the bar counts files and says how many segments are done."""
        if self.progress is None:
            return
        if summary.unit == "segments":
            completed = self._files_completed(path, record)
            unit = f"files, {summary.total} segments"
        else:
            completed, unit = float(summary.total), "files"
        rate = f" {summary.done / summary.seconds:.2f} {summary.unit}/s" if summary.seconds > 0 and summary.done else ""
        description = self.working or (one_line(path.name)[-PROGRESS_NAME_CHARS:] if path is not None else "files")
        self.progress.update(self.task_id, completed=completed, rate=rate, unit=unit, description=description)


class ResultStream:
    """`write`/`flush` over `Console.result`, for writers that take a text stream; `isatty` is stdout's."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        lines = text.split("\n")  # not splitlines(): a U+2028 inside a JSON string is text, not a line end
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            self.console.result(line)
        return len(text)

    def flush(self) -> None:
        if self.console.stdout is not None:
            self.console.stdout.flush()

    def isatty(self) -> bool:
        return self.console.stdout is not None and self.console.stdout.isatty()


class ConsoleLogHandler(logging.Handler):
    """Library log lines (e.g. which encoder backend was chosen and why) as `vl2: ...` stderr lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=console.level)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "vl2: warning: " if record.levelno >= logging.WARNING else "vl2: "
        try:
            message = record.getMessage()
        except Exception:  # a library's malformed log call must not end the run
            message = str(record.msg)
        if record.name == "py.warnings":  # `file:line: Category: text\n  source line`: the text is the point
            message = message.strip().splitlines()[0]
        self.console.log(prefix + message, record.levelno)


class LibraryLogs:
    """The `vl2cli` loggers, Python's warnings and the called libraries' loggers routed to the console for one
    run, so the log level (and --quiet) governs them all; every logger is put back as it was by `restore`."""

    def __init__(self, console: Console) -> None:
        self.handler = ConsoleLogHandler(console)
        self.level = console.level
        self.saved: dict[str, tuple[int, bool, list[logging.Handler]]] = {}

    def adopt(self) -> None:
        """Take the loggers over; again after a library is imported (transformers adds its own stderr
        handler on import: it is set aside, else its lines would bypass the level and the progress line)."""
        for name in ("vl2cli", *LIBRARY_LOGGERS):
            logger = logging.getLogger(name)
            if name not in self.saved:
                self.saved[name] = (logger.level, logger.propagate, [])
            for own in list(logger.handlers):
                if own is not self.handler:
                    logger.removeHandler(own)
                    self.saved[name][2].append(own)
            if self.handler not in logger.handlers:
                logger.addHandler(self.handler)
            # vl2's own lines down to the chosen level; the libraries' from warning up unless debugging
            logger.setLevel(self.level if name == "vl2cli" else max(self.level, logging.WARNING))
            logger.propagate = False

    def restore(self) -> None:
        for name, (level, propagate, handlers) in self.saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(self.handler)
            for own in handlers:
                logger.addHandler(own)
            logger.setLevel(level)
            logger.propagate = propagate


@contextmanager
def library_logs_to(console: Console) -> Iterator[LibraryLogs]:
    """`LibraryLogs` for the length of a run, Python's warnings captured into logging meanwhile."""
    logs = LibraryLogs(console)
    logs.adopt()
    logging.captureWarnings(True)  # (Python's filters still decide which warnings are shown at all)
    try:
        yield logs
    finally:
        logging.captureWarnings(False)
        logs.restore()


__all__ = ["Console", "ConsoleLogHandler", "LibraryLogs", "library_logs_to", "log_level_of", "one_line", "same_terminal",
           "terminal_safe"]
