"""The run's console as a user sees it: on a real pseudo-terminal (drawn by the pyte emulator) results print
above the progress line, never through it; from cron (no terminal) `--quiet` says nothing on a good run,
and old permanent failures do not fail every later night."""
from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pyte
import pytest

from media_helpers.fixtures import MEDIA_FIXTURES
from reference_fixtures import reference_root
from test_cli import AV_FIXTURE, BROKEN, IMAGE, RUN_TIMEOUT_S, TINY_VIDEO, needs_model_and, vl2
from vl2cli.commands.console import Console, library_logs_to, terminal_safe
from vl2cli.commands.count_ahead import CountAhead
from vl2cli.commands.exit_codes import EXIT_OK, EXIT_SOME_FAILED
from vl2cli.commands.readable import readable_text
from vl2cli.commands.summary import RunSummary
from vl2cli.discover import WalkOptions

#: Wide enough that no line of the test wraps (a JSON record is ~1.5k characters).
SCREEN_COLUMNS, SCREEN_ROWS = 4000, 60
SUMMARY_STAMP = re.compile(r"^vl2: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ done: ")
#: What a progress line leaves behind if it is not cleared: its words, bar and spinner (braille) characters.
PROGRESS_REMNANTS = re.compile(r"ETA|━|[\u2800-\u28ff]")


def copy_media(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(MEDIA_FIXTURES / name, folder / name)
    return folder


def model_args() -> list[str]:
    """The tiny AV checkpoint, a 4-token answer (as tests/test_cli.py runs it)."""
    return ["--model", str(reference_root() / AV_FIXTURE / "checkpoint"), "--max-new-tokens", "4"]


def run_on_terminal(*args: str) -> tuple[int, list[str], bytes]:
    """`vl2 ARGS` with stdin, stdout and stderr on one pseudo-terminal: the exit code, the screen it leaves
    (its non-blank rows) and the bytes it wrote."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SCREEN_ROWS, SCREEN_COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(TERM="xterm-256color", HF_HUB_CACHE=str(reference_root() / AV_FIXTURE / "hub"), HF_HUB_OFFLINE="1")
    script = Path(sys.executable).with_name("vl2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vl2cli.cli"]
    process = subprocess.Popen([*command, *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                               close_fds=True)
    os.close(slave)
    screen = pyte.Screen(SCREEN_COLUMNS, SCREEN_ROWS)
    stream = pyte.ByteStream(screen)
    written = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
            written += data
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, [row.rstrip() for row in screen.display if row.strip()], bytes(written)


# ------------------------------------------------------------------ no model needed
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_segments_are_counted_as_part_of_files_never_past_the_total() -> None:
    console = Console(quiet=False, stderr=_Terminal())
    summary = RunSummary(unit="segments")
    with console.start():
        console.set_total(2)
        for index in range(3):  # the first file is cut into three segments
            summary.count({"error": None})
            console.advance(summary, Path("/a.mp4"), {"error": None, "segment": {"index": index, "count": 3}})
            task = console.progress.tasks[0]
            assert task.completed == pytest.approx((index + 1) / 3) and task.total == 2
        summary.count(None)  # the second file's first segment was done by an earlier run
        console.advance(summary, Path("/b.mp4"), None)
        assert console.progress.tasks[0].completed == 1
        summary.count({"error": None})
        console.advance(summary, Path("/b.mp4"), {"error": None, "segment": {"index": 1, "count": 2}})
        assert console.progress.tasks[0].completed == 2 and console.progress.tasks[0].fields["unit"] == "files, 5 segments"


def test_results_on_a_terminal_show_control_characters_instead_of_obeying_them() -> None:
    answer = "a\x1b[2Jb\rc\nd\te\x9b"  # clear screen, carriage return, a line, a tab, a C1 CSI
    terminal, pipe = _Terminal(), io.StringIO()
    Console(quiet=True, stderr=io.StringIO(), stdout=terminal).result(answer)
    Console(quiet=True, stderr=io.StringIO(), stdout=pipe).result(answer)
    assert terminal.getvalue() == "a\\x1b[2Jb\\x0dc\nd\te\\x9b\n"
    assert pipe.getvalue() == answer + "\n"  # a program reading the pipe gets the answer as it is


def test_the_count_ahead_gives_the_total_before_the_walk_and_gives_up_past_its_bounds(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"clip{i}.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not media")
    heard: list[int] = []
    counter = CountAhead([tmp_path], walk=WalkOptions(kinds=("video",)), on_count=heard.append)
    counter.start().thread.join(timeout=30)
    assert heard == [5] and counter.total == 5
    capped = CountAhead([tmp_path], walk=WalkOptions(kinds=("video",)), on_count=heard.append,
                        max_files=3)
    capped.start().thread.join(timeout=30)
    assert heard == [5] and capped.total is None  # past the cap: the run's own walk gives the total
    console = Console(quiet=False, stderr=_Terminal())
    with console.start():
        console.estimate_total(9)
        console.set_total(7)  # the walk's own count wins, and a late estimate does not undo it
        console.estimate_total(9)
        assert console.progress.tasks[0].total == 7


def test_readable_text_of_captions_answers_and_labels() -> None:
    base = {"path": "/v/a.mp4", "segment": None, "error": None, "label_scores": None, "prompt": "who?"}
    assert readable_text({**base, "output": "a dog runs"}) == "/v/a.mp4: a dog runs"
    assert readable_text({**base, "output": "Ann"}, with_question=True) == "/v/a.mp4: who?\n  Ann"
    scores = [{"label": "music", "probability": 0.25}, {"label": "cooking", "probability": 0.75}]
    assert readable_text({**base, "label_scores": scores, "top_k": ["cooking"]}) == "/v/a.mp4:\n  0.750  cooking"
    assert readable_text({**base, "error": {"code": "empty_file", "message": "x"}}) is None


def test_library_warnings_obey_the_log_level() -> None:
    before = list(logging.getLogger("transformers").handlers)
    for quiet, expect_shown in ((False, True), (True, False)):
        stderr = io.StringIO()
        console = Console(quiet=quiet, stderr=stderr)
        with library_logs_to(console):
            warnings.warn("`old_arg` is deprecated", FutureWarning)
            logging.getLogger("transformers.modeling_utils").warning("some weights were not used")
        shown = stderr.getvalue()
        assert ("vl2: warning: " in shown and "`old_arg` is deprecated" in shown
                and "some weights were not used" in shown) == expect_shown, shown
    assert logging.getLogger("transformers").handlers == before  # put back as it was after the run


def test_the_summary_line_is_stamped_in_utc() -> None:
    from datetime import datetime, timezone

    line = RunSummary(done=2).line(now=datetime(2026, 12, 2, 14, 3, 11, tzinfo=timezone.utc))
    assert line.startswith("vl2: 2026-12-02T14:03:11Z done: 2 files: 2 done, 0 skipped, 0 failed")


# ------------------------------------------------------------------ with the tiny AV model
@needs_model_and(TINY_VIDEO, IMAGE)
def test_on_a_terminal_results_print_above_the_progress_line(tmp_path: Path) -> None:
    folder = copy_media(tmp_path / "clips", TINY_VIDEO, IMAGE)
    code, rows, written = run_on_terminal("caption", str(folder), "--json", "--workers", "1", *model_args())
    assert code == EXIT_OK, rows
    assert "ETA".encode() in written and "/2".encode() in written  # a progress line with its total was drawn...
    assert not any(PROGRESS_REMNANTS.search(row) for row in rows), rows  # ...and nothing of it is left
    records = [json.loads(row) for row in rows if row.startswith("{")]  # whole, no character overwritten
    assert sorted(Path(r["path"]).name for r in records) == sorted([TINY_VIDEO, IMAGE])
    assert all(row.startswith(("{", "vl2: ")) for row in rows), rows
    code, rows, _ = run_on_terminal("caption", str(folder), "--workers", "1", *model_args())  # text by default
    assert code == EXIT_OK, rows
    assert not any(PROGRESS_REMNANTS.search(row) for row in rows), rows
    for record in records:  # as shown: a random model's answer may hold control characters
        assert terminal_safe(f"{record['path']}: {record['output']}").rstrip() in rows, rows
    assert SUMMARY_STAMP.match(rows[-1]), rows


@needs_model_and(TINY_VIDEO)
def test_on_a_terminal_one_answer_is_on_its_own_line(tmp_path: Path) -> None:
    clip = copy_media(tmp_path, TINY_VIDEO) / TINY_VIDEO
    code, rows, _ = run_on_terminal("ask", str(clip), "what sound is heard?", "--json", *model_args())
    assert code == EXIT_OK, rows
    answer = next(json.loads(row) for row in rows if row.startswith("{"))["output"]
    code, rows, written = run_on_terminal("ask", str(clip), "what sound is heard?", *model_args())
    assert code == EXIT_OK, rows
    assert "ETA".encode() in written  # the progress line was drawn while the model worked...
    assert not any(PROGRESS_REMNANTS.search(row) for row in rows), rows  # ...and the answer is not glued to it
    assert [row for row in rows if not row.startswith("vl2: ")] == [
        line.rstrip() for line in answer.split("\n") if line.strip()], rows


@needs_model_and(IMAGE, BROKEN[0])
def test_cron_quiet_says_nothing_on_a_good_run_and_old_permanent_failures_exit_0(tmp_path: Path) -> None:
    folder = copy_media(tmp_path / "clips", IMAGE)
    out = tmp_path / "out.jsonl"
    args = ("caption", str(folder), "--out", str(out), "--quiet", "--workers", "1", *model_args())
    first = vl2(*args)
    assert (first.returncode, first.stdout, first.stderr) == (EXIT_OK, "", "")  # no preamble, no library warnings
    copy_media(folder, BROKEN[0])
    failing = vl2(*args)
    assert failing.returncode == EXIT_SOME_FAILED and failing.stdout == ""
    lines = failing.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("vl2: failed: ") and SUMMARY_STAMP.match(lines[1]), lines
    night_after = vl2(*args)  # nothing new; the empty file fails the same way forever: not exit 1 every night
    assert (night_after.returncode, night_after.stdout, night_after.stderr) == (EXIT_OK, "", "")
    told = vl2(*args[:-len(model_args()) - 3], "--workers", "1", *model_args())  # the same, not quiet
    assert told.returncode == EXIT_OK and "1 file(s) of the output end in a permanent error" in told.stderr
    assert len(out.read_text().splitlines()) == 2


def test_log_level_is_a_setting_like_the_others() -> None:
    from vl2cli.errors import Vl2Error
    from vl2cli.settings import resolve_settings

    resolved = resolve_settings({"log_level": None}, env={"VL2_LOG_LEVEL": "warning"})
    assert resolve_settings({}, env={}).settings.log_level == "auto"
    assert resolved.settings.log_level == "warning" and resolved.sources["log_level"] == "env"
    assert Console(quiet=True, stderr=io.StringIO(), log_level="warning").level == logging.WARNING  # it wins
    assert Console(quiet=True, stderr=io.StringIO(), log_level="auto").level == logging.ERROR
    with pytest.raises(Vl2Error, match="log_level"):
        resolve_settings({"log_level": "loud"}, env={})
