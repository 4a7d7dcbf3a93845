"""The run's stderr: log lines, the rich progress bar when stderr is a terminal, and the library's log lines.

Kept apart from the run command's body so the only rich import of a run sits in the commands layer.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from .summary import RunSummary


#: The end of the current file's name the progress bar shows.
PROGRESS_NAME_CHARS = 40


def one_line(message: str) -> str:
    """A log line stays one line: a file name holding a newline cannot forge a summary line."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


class Console:
    """stderr logging that cooperates with the progress bar (rich) when one is shown."""

    def __init__(self, *, quiet: bool, stderr: TextIO) -> None:
        self.stderr = stderr
        self.progress: Any = None
        self.task_id: Any = None
        self.show_progress = not quiet and stderr.isatty()
        self.total: int | None = None
        self.working: str | None = None  # the batch the model is working on, as the bar names it

    def log(self, message: str) -> None:
        message = one_line(message)
        if self.progress is not None:
            self.progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stderr, flush=True)

    def start(self) -> Any:
        """The progress bar; its total is unknown while the folders are still being walked."""
        if not self.show_progress:
            return nullcontext()
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=RichConsole(file=self.stderr), transient=True)
        self.task_id = self.progress.add_task("files", total=None, rate="")
        return self.progress

    def set_total(self, total: int) -> None:
        """Called (from the decode feeder thread) when the walk has found every file."""
        self.total = total

    def working_on(self, paths: Sequence[Path]) -> None:
        """The model starts on a batch: the bar names its first file (and how many more are in it)."""
        if self.progress is not None and paths:
            self.working = one_line(paths[0].name)[-PROGRESS_NAME_CHARS:] + (f" +{len(paths) - 1}" if len(paths) > 1 else "")
            self.progress.update(self.task_id, description=self.working)

    def advance(self, summary: RunSummary, path: Path | None = None) -> None:
        """One more file finished. The bar names the file being worked on (`working_on`), or, when no
        batch was announced (e.g. another engine does the model work), the file that just finished."""
        if self.progress is not None:
            rate = f"{summary.done / summary.seconds:.2f} files/s" if summary.seconds > 0 else ""
            description = self.working or (one_line(path.name)[-PROGRESS_NAME_CHARS:] if path is not None else "files")
            self.progress.update(self.task_id, advance=1, rate=rate, total=self.total, description=description)


class ConsoleLogHandler(logging.Handler):
    """Library log lines (e.g. which encoder backend was chosen and why) as `vl2: ...` stderr lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "vl2: warning: " if record.levelno >= logging.WARNING else "vl2: "
        self.console.log(prefix + record.getMessage())


@contextmanager
def library_logs_to(console: Console):
    """Route the `vl2cli` loggers to the console for one run (quiet too: cron logs want these lines)."""
    logger = logging.getLogger("vl2cli")
    handler = ConsoleLogHandler(console)
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


__all__ = ["Console", "ConsoleLogHandler", "library_logs_to", "one_line"]
