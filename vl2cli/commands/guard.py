"""The one guard every `vl2` command runs under: how a command ends when something goes wrong.

Whatever the command (a run, chat, export, report, merge, shards, config, inspect, convert), the same
things become the same one line on stderr and the same exit code, never a traceback:
- SIGINT / SIGTERM (`Interrupted`, and a bare KeyboardInterrupt): "vl2: interrupted by SIGTERM; ...",
  exit 128 + N (130, 143), as shells report it;
- a `Vl2Error` (bad settings, a checkpoint that cannot be used, a locked output...): "vl2: error: ...",
  exit 2;
- an OSError (a read-only or full disk, a folder where a file should be, no access): the path and the
  reason, exit 2;
- anything else is a bug in vl2: one line naming the exception, and a request to report it, exit 2.
click's own exits (`typer.Exit`, usage errors) pass through untouched.
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any, TextIO

import click
import typer

from ..errors import Vl2Error
from .exit_codes import EXIT_FATAL, EXIT_SIGNAL_BASE

#: Where a user reports what `vl2` calls a bug.
BUG_HINT = "this is a bug in vl2; please report it with the command line that caused it"
#: How typer and click end a command themselves (an exit code, a usage error): not failures of the body.
_COMMAND_LINE_EXITS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)
#: The signals that stop a command with one message and the shell's 128+N code.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command: it stops where it is (records are whole, the lock is freed)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.signal_name = signal.Signals(signal_number).name


def _raise_interrupted(signal_number: int, frame: Any) -> None:
    raise Interrupted(signal_number)


def install_signal_handlers() -> None:
    """Turn SIGINT and SIGTERM into `Interrupted` (the console script calls this once, before any command)."""
    for handled in HANDLED_SIGNALS:
        signal.signal(handled, _raise_interrupted)


def run_guarded(body: Callable[[], int | None], *, stderr: TextIO | None = None) -> int:
    """Run a command body and return its exit code (None counts as 0); see the module docstring for
    what each failure becomes."""
    out = stderr if stderr is not None else sys.stderr

    def say(message: str) -> None:
        print(message, file=out, flush=True)

    try:
        code = body()
        return 0 if code is None else code
    except _COMMAND_LINE_EXITS:
        raise
    except Interrupted as exc:
        say(f"vl2: interrupted by {exc.signal_name}; everything written so far is kept, rerun to go on")
        return EXIT_SIGNAL_BASE + exc.signal_number
    except KeyboardInterrupt:  # no handler installed (a library caller's process): Ctrl-C is SIGINT
        say("vl2: interrupted by SIGINT; everything written so far is kept, rerun to go on")
        return EXIT_SIGNAL_BASE + signal.SIGINT
    except Vl2Error as exc:
        say(f"vl2: error: {exc}")
        return EXIT_FATAL
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        say(f"vl2: error: {where}{exc.strerror or exc} (what was written so far is intact)")
        return EXIT_FATAL
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, reported without a traceback
        first_line = (str(exc).splitlines() or [""])[0]
        say(f"vl2: internal error: {type(exc).__name__}: {first_line} ({BUG_HINT})")
        return EXIT_FATAL
