"""`vl2 chat`'s body: load once, read lines (`chat_lines`), run slash commands (`chat_slash`) or ask the
session (`vl2cli.tasks.chat`) and print each answer, streamed as it is generated on a terminal.

stdout holds only answers; prompts, command replies, failures and the summary go to stderr.
"""
from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any, TextIO

from ..discover import iter_media
from ..errors import InputError, Vl2Error
from ..input_lists import STDIN_NAME, each_once, iter_listed
from ..run import lazy_model, listed_inputs, run_options, sampling_of
from ..tasks.chat import ChatSession
from .chat_lines import open_lines
from .chat_slash import NEEDS_ARGUMENT, SlashCommand, help_text, parse_slash
from .guard import Interrupted


#: Control characters a terminal would act on (escape sequences, bells...): a model's answer shows them
#: as `\xNN` on a terminal instead; line breaks and tabs stay.
_TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` as a terminal can show it without obeying it."""
    return _TERMINAL_CONTROLS.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _answer_line(record: dict[str, Any], several_files: bool) -> str:
    """One answer per line: the text's own line breaks become spaces (--json keeps the exact text)."""
    text = " ".join(str(record["output"]).split())
    return f"{record['path']}: {text}" if several_files else text


def _is_ctrl_c(exc: KeyboardInterrupt) -> bool:
    """Ctrl-C (SIGINT) stops an answer or clears the line; SIGTERM still ends the session."""
    return not isinstance(exc, Interrupted) or exc.signal_number == signal.SIGINT


class ChatLoop:
    """The conversation on the terminal: one line in, a command's reply or every file's answer out."""

    def __init__(self, session: ChatSession, settings: Any, *, stdout: TextIO, stderr: TextIO) -> None:
        self.session, self.settings, self.stdout, self.stderr = session, settings, stdout, stderr
        #: answers appear piece by piece where a person reads them (a terminal, without --json)
        self.stream = bool(stdout.isatty()) and not settings.json
        self.questions = self.answers = self.failed = 0
        self._open_line = False  # a streamed answer's line not yet ended

    def say(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)

    def run(self, lines: Any) -> None:
        while True:
            try:
                line = lines.read()
            except KeyboardInterrupt as exc:
                if not _is_ctrl_c(exc):
                    raise
                print(file=self.stderr, flush=True)
                self.say("vl2: (/quit or Ctrl-D ends the session)")
                continue
            if line is None:
                return
            text = line.strip()
            if not text:
                continue
            command = parse_slash(text)
            if command is None:
                with lines.answering():
                    self.ask(text)
            elif not self.command(command):
                return

    # ------------------------------------------------------------ commands
    def command(self, command: SlashCommand) -> bool:
        """Run a slash command; False ends the session."""
        if not command.known:
            self.say(f"vl2: unknown command /{command.name}; /help lists the commands")
        elif command.name in NEEDS_ARGUMENT and not command.argument:
            self.say(f"vl2: /{command.name} needs a PATH")
        elif command.name in ("quit", "exit"):
            return False
        elif command.name == "help":
            self.say(help_text())
        elif command.name == "reset":
            self.session.reset()
            self.say("vl2: conversation forgotten; the next question stands alone")
        elif command.name == "files":
            self.say("\n".join(str(path) for path in self.session.files))
        elif command.name == "file":
            self.add_files(command.argument)
        return True

    def add_files(self, argument: str) -> None:
        try:
            found = list(iter_media([Path(argument).expanduser()], on_warning=self._warn, **_filters(self.settings)))
        except Vl2Error as exc:
            self.say(f"vl2: error: {exc}")
            return
        if not found:
            self.say(f"vl2: warning: no media files found in {argument}")
            return
        before = len(self.session.files)
        for path in found:
            self.session.add_file(path)
        self.say(f"vl2: added {len(self.session.files) - before} file(s); the session has {len(self.session.files)}")

    def _warn(self, warning: Any) -> None:
        self.say(f"vl2: warning: {warning.message}")

    # ------------------------------------------------------------ questions
    def ask(self, question: str) -> None:
        self.questions += 1
        several = len(self.session.files) > 1
        streamed: set[str] = set()

        def on_text(path: Path, piece: str) -> None:
            if str(path) not in streamed:
                self._end_line()
                streamed.add(str(path))
                if several:
                    self.stdout.write(f"{path}: ")
            self.stdout.write(terminal_safe(piece))
            self.stdout.flush()
            self._open_line = True

        try:
            records = self.session.ask(question, on_text=on_text if self.stream else None)
        except KeyboardInterrupt as exc:
            if not _is_ctrl_c(exc):
                raise
            self._end_line()
            self.say("vl2: answer interrupted (not kept in the conversation)")
            self.failed += 1
            return
        self._end_line()
        for record in records:
            self.show(record, streamed=record["path"] in streamed, several=several)

    def show(self, record: dict[str, Any], *, streamed: bool, several: bool) -> None:
        if record["error"] is not None:
            self.failed += 1
            self.say(f"vl2: failed: {record['error']['message']} [{record['error']['code']}]")
            if self.settings.json:
                print(json.dumps(record, ensure_ascii=False), file=self.stdout, flush=True)
            return
        self.answers += 1
        if not streamed:
            line = json.dumps(record, ensure_ascii=False) if self.settings.json else _answer_line(record, several)
            print(line, file=self.stdout, flush=True)

    def _end_line(self) -> None:
        if self._open_line:
            print(file=self.stdout, flush=True)
            self._open_line = False


def _filters(settings: Any) -> dict[str, Any]:
    return dict(recursive=settings.recursive, kinds=settings.kinds, include=settings.include, exclude=settings.exclude)


def chat_command(inputs: list[Path], settings: Any, *, stdin: Any, stdout: Any, stderr: Any) -> int:
    """The body of `vl2 chat`: load once, answer each line of stdin; exit 1 if any answer failed."""
    if settings.files_from == STDIN_NAME or any(str(raw) == STDIN_NAME for raw in inputs):
        raise InputError("chat reads its questions from stdin; name the files, or list them with --files-from LIST")
    named, listed = listed_inputs(inputs, settings, stdin)
    warn = lambda warning: print(f"vl2: warning: {warning.message}", file=stderr, flush=True)  # noqa: E731
    files = list(iter_media(named, on_warning=warn, **_filters(settings)))
    if listed is not None:  # a list names the files; questions then come from a terminal only
        files = list(each_once(iter([*files, *iter_listed(listed, on_warning=warn, **_filters(settings))])))
    if not files:
        print("vl2: warning: no media files found in the inputs", file=stderr, flush=True)
        return 1
    model = lazy_model(settings)
    session = ChatSession(model, files, options=run_options(settings), max_new_tokens=settings.max_new_tokens,
                          sampling=sampling_of(settings))
    model.loaded_model  # load now: the first question should not wait for it, and errors show at once
    loop = ChatLoop(session, settings, stdout=stdout, stderr=stderr)
    lines = open_lines(stdin, stdout, stderr)
    try:
        loop.run(lines)
    finally:
        lines.close()
    cache = session.feature_cache
    print(f"vl2: {loop.questions} question(s) about {len(session.files)} file(s): {loop.answers} answered, "
          f"{loop.failed} failed; media encoded {cache.stored} time(s), reused {cache.hits} time(s)",
          file=stderr, flush=True)
    return 1 if loop.failed else 0
