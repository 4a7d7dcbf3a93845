"""Where `vl2 chat` reads its lines: a terminal with line editing and history, or a plain pipe.

On a terminal (stdin and stdout both) the lines come through `input()` with Python's `readline`
loaded, so the arrow keys edit and recall instead of printing `^[[A`, and earlier sessions' questions
come back from a history file (bounded). Piped questions (`printf 'q1\\nq2\\n' | vl2 chat clip.mp4`)
are read line by line as they are, with no prompt; with stdin on a terminal but stdout redirected,
the prompt goes to stderr so stdout holds only answers.
"""
from __future__ import annotations

import contextlib
import os
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

#: Shown on a terminal before each question.
PROMPT = "? "
#: Questions kept in the history file, newest last.
HISTORY_LINES = 1000
HISTORY_FILE = "chat_history"
HOME_ENV = "VL2_HOME"
#: Index of the local modes (ECHO among them) in a `termios.tcgetattr` list.
LOCAL_MODES = 3


def history_path() -> Path:
    """`$VL2_HOME/chat_history`, else `~/.cache/vl2/chat_history` (XDG_CACHE_HOME honoured).

    Never the source checkout, which `vl2_home()` would give for exports: a history is the user's."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser() / HISTORY_FILE
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vl2" / HISTORY_FILE


class PipedLines:
    """Lines of a pipe or file, or of a terminal whose answers go elsewhere (prompt on stderr)."""

    def __init__(self, stdin: TextIO, stderr: TextIO, *, prompt: bool) -> None:
        self.stdin, self.stderr, self.prompt = stdin, stderr, prompt

    def read(self) -> str | None:
        """The next line without its line break; None at the end (Ctrl-D)."""
        if self.prompt:
            print(PROMPT, end="", file=self.stderr, flush=True)
        line = self.stdin.readline()
        if not line:
            if self.prompt:  # Ctrl-D left the cursor after the prompt
                print(file=self.stderr, flush=True)
            return None
        return line.rstrip("\r\n")

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        yield

    def close(self) -> None:
        pass


class TerminalLines:
    """Lines typed at a terminal through `input()` with readline: editing, Up/Down history."""

    def __init__(self, stdin: TextIO, stdout: TextIO, history: Path | None = None) -> None:
        import readline  # noqa: F401 - importing it gives input() line editing

        self.readline: Any = readline
        self.stdin, self.stdout = stdin, stdout
        self.history = history if history is not None else history_path()
        readline.set_history_length(HISTORY_LINES)
        try:
            readline.read_history_file(self.history)
        except OSError:  # none yet, or unreadable: start empty
            pass

    def read(self) -> str | None:
        try:
            return input(PROMPT)
        except EOFError:  # Ctrl-D: end the prompt's line, so what follows starts on its own
            print(file=self.stdout, flush=True)
            return None

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Keys typed while an answer prints are not echoed (the terminal would show Up as `^[[A`
        inside the answer); they wait in the terminal's buffer, and the next prompt's readline reads them."""
        fd = self.stdin.fileno()
        try:
            before = termios.tcgetattr(fd)
        except termios.error:  # not a terminal after all
            yield
            return
        quiet = list(before)
        quiet[LOCAL_MODES] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, quiet)  # TCSANOW: keep what was typed ahead
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, before)

    def close(self) -> None:
        """Keep the history for the next session (a history that cannot be written is not an error)."""
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self.readline.write_history_file(self.history)
        except OSError:
            pass


def open_lines(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> PipedLines | TerminalLines:
    """Terminal reading where `input()` can edit (the process's own stdin and stdout are terminals)."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty() and stdout.isatty():
        return TerminalLines(stdin, stdout)
    return PipedLines(stdin, stderr, prompt=stdin.isatty())
