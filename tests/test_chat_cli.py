"""`vl2 chat` as a person uses it: typed at a real pseudo-terminal, read back through a terminal emulator
(pyte), and fed from a pipe. The tiny fixture checkpoint answers; nothing is stubbed.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import REPO_ROOT, load_reference
from vl2cli.commands.chat import terminal_safe
from vl2cli.commands.chat_lines import HISTORY_LINES, TerminalLines, history_path

pyte = pytest.importorskip("pyte")

AV_FIXTURE = "siglip-qwen2-av"
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
IMAGE = "img_smptehdbars_500x300.png"
pytestmark = needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO, IMAGE))
TOKENS = 6
QUESTION = "what is shown?"
#: Wide enough that no answer of TOKENS tokens wraps; tall enough that nothing scrolls away.
COLUMNS, ROWS = 200, 60
#: Loading the model (torch, transformers, the fixture) on a busy 2-core machine.
START_TIMEOUT_S = 300
STEP_TIMEOUT_S = 120
UP_ARROW = "\x1b[A"
CTRL_D = "\x04"
CTRL_C = "\x03"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("media")
    for name in (TINY_VIDEO, IMAGE):
        (folder / name).write_bytes((MEDIA_FIXTURES / name).read_bytes())
    return [folder / TINY_VIDEO, folder / IMAGE]


def _chat_args(video: Path, *extra: str) -> list[str]:
    checkpoint = load_reference(AV_FIXTURE).checkpoint
    return [sys.executable, "-m", "vl2cli.cli", "chat", str(video), "--model", str(checkpoint),
            "--max-new-tokens", str(TOKENS), *extra]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_CACHE=str(load_reference(AV_FIXTURE).hub_cache), HF_HUB_OFFLINE="1",
               VL2_HOME=str(home), TERM="xterm", INPUTRC=os.devnull, COLUMNS=str(COLUMNS), LINES=str(ROWS))
    return env


class Terminal:
    """A process on a pseudo-terminal of COLUMNS x ROWS, its output drawn on a pyte screen."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        # its own session with the terminal as controlling terminal, so Ctrl-C reaches it as SIGINT
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                        start_new_session=True,
                                        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.raw = b""

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def cursor_line(self) -> str:
        return self.lines()[self.screen.cursor.y]

    def _pump(self, timeout_s: float) -> bool:
        """Draw what the process wrote within `timeout_s`; False once it closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave end is closed
            return False
        if not data:
            return False
        self.raw += data
        self.stream.feed(data)
        return True

    def wait_for(self, what: str, condition: Callable[[], bool], timeout_s: float = STEP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline or not self._pump(0.2) and not condition():
                screen = "\n".join(line for line in self.lines() if line)
                raise AssertionError(f"no {what} on the terminal; it shows:\n{screen}")

    def wait_for_prompt(self, number: int, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Until the `number`-th prompt waits for a line, empty."""
        def shown() -> bool:
            prompts = sum(line == "?" or line.startswith("? ") for line in self.lines())
            return prompts == number and self.cursor_line() == "?" and self.screen.cursor.x == len("? ")
        self.wait_for(f"prompt number {number}", shown, timeout_s)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout_s: float = STEP_TIMEOUT_S) -> int:
        deadline = time.monotonic() + timeout_s
        while self._pump(0.2) and time.monotonic() < deadline:
            pass
        try:
            return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            os.close(self.master)


def _answer_after(lines: list[str], question_line: str, start: int = 0) -> tuple[str, int]:
    """The answer printed after the first `question_line` at or after `start`, and where it is."""
    at = lines.index(question_line, start)
    answer = []
    for line in lines[at + 1:]:
        if line.startswith("?") or line.startswith("vl2:"):
            break
        answer.append(line)
    return " ".join(" ".join(answer).split()), at


def test_chat_on_a_terminal_edits_recalls_streams_and_ends_cleanly(media: list[Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    piped = subprocess.run([*_chat_args(media[0]), "--json"], input=f"{QUESTION}\n", capture_output=True, text=True,
                           env=env, timeout=START_TIMEOUT_S)
    assert piped.returncode == 0, piped.stderr
    expected = " ".join(terminal_safe(json.loads(piped.stdout)["output"]).split())

    terminal = Terminal(_chat_args(media[0]), env)
    try:
        terminal.wait_for_prompt(1, START_TIMEOUT_S)
        terminal.type(f"{QUESTION}\r")
        terminal.wait_for_prompt(2)
        terminal.type(UP_ARROW)  # recalls the question instead of printing ^[[A
        terminal.wait_for("the recalled question", lambda: terminal.cursor_line() == f"? {QUESTION}")
        terminal.type("\r")
        terminal.wait_for_prompt(3)
        terminal.type("/help\r")
        terminal.wait_for_prompt(4)
        assert any(line.lstrip().startswith("/reset") for line in terminal.lines())
        terminal.type("/reset\r")
        terminal.wait_for_prompt(5)
        assert any("conversation forgotten" in line for line in terminal.lines())
        terminal.type(f"half a question{CTRL_C}")  # Ctrl-C at the prompt: a fresh prompt, the session goes on
        terminal.wait_for_prompt(6)
        assert any("(/quit or Ctrl-D ends the session)" in line for line in terminal.lines())
        terminal.type(CTRL_D)
        code = terminal.finish()
    finally:
        if terminal.process.poll() is None:
            terminal.process.kill()
    lines = terminal.lines()
    assert code == 0, "\n".join(lines)
    assert not any("^[" in line for line in lines), "\n".join(lines)
    first, at = _answer_after(lines, f"? {QUESTION}")
    assert first == expected  # streamed piece by piece, the same text as the record's
    second, _ = _answer_after(lines, f"? {QUESTION}", at + 1)  # the recalled question was asked
    assert second
    assert not any(f"{QUESTION}" in line for line in lines if "/help" in line)  # /help went to vl2, not the model
    summary = [line for line in lines if "question(s) about" in line]
    assert summary == ["vl2: 2 question(s) about 1 file(s): 2 answered, 0 failed; "
                       "media encoded 1 time(s), reused 1 time(s)"]  # on its own line, not after the prompt
    assert QUESTION in (home / "chat_history").read_text()  # the next session recalls it too


def test_piped_lines_take_slash_commands_and_keep_one_answer_per_line(media: list[Path], tmp_path: Path) -> None:
    lines = [QUESTION, "/nope", "/file", f"/file {media[1]}", "/files", "/reset", QUESTION, "/quit", "never asked"]
    run = subprocess.run(_chat_args(media[0]), input="\n".join(lines) + "\n", capture_output=True, text=True,
                         env=_env(tmp_path / "home"), timeout=START_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    answers = run.stdout.splitlines()
    assert len(answers) == 3  # the first question about one file, the second about both
    assert answers[1].startswith(f"{media[0]}: ") and answers[2].startswith(f"{media[1]}: ")
    err = run.stderr
    assert "vl2: unknown command /nope; /help lists the commands" in err
    assert "vl2: /file needs a PATH" in err
    assert "vl2: added 1 file(s); the session has 2" in err
    assert f"{media[0]}\n{media[1]}\n" in err  # /files
    assert "2 question(s) about 2 file(s): 3 answered, 0 failed" in err
    assert not (tmp_path / "home" / "chat_history").exists()  # a pipe keeps no history


def test_keys_typed_during_an_answer_are_not_echoed_and_the_history_is_bounded(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "r", closefd=False) as stdin:
            lines = TerminalLines(stdin, sys.stdout, history=tmp_path / "chat_history")
            assert termios.tcgetattr(slave)[3] & termios.ECHO
            with lines.answering():
                assert not termios.tcgetattr(slave)[3] & termios.ECHO
            assert termios.tcgetattr(slave)[3] & termios.ECHO
            readline = lines.readline
            readline.clear_history()
            for k in range(HISTORY_LINES + 5):
                readline.add_history(f"question {k}")
            lines.close()
    finally:
        os.close(master)
        os.close(slave)
    readline.clear_history()
    readline.read_history_file(str(tmp_path / "chat_history"))  # read back as readline keeps it (GNU or libedit)
    assert readline.get_current_history_length() == HISTORY_LINES
    assert readline.get_history_item(HISTORY_LINES) == f"question {HISTORY_LINES + 4}"


def test_the_history_lives_under_vl2_home_or_the_users_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VL2_HOME", str(tmp_path / "home"))
    assert history_path() == tmp_path / "home" / "chat_history"
    monkeypatch.delenv("VL2_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert history_path() == tmp_path / "cache" / "vl2" / "chat_history"
