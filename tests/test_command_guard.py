"""The one guard of every command: signals, OS errors, vl2's errors and bugs end every command the same
way, as one stderr line and a documented exit code, never a traceback."""
from __future__ import annotations

import errno
import io
import json
import signal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vl2cli.cli import app
from vl2cli.commands.exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SIGNAL_BASE
from vl2cli.commands.guard import BUG_HINT, Interrupted, run_guarded
from vl2cli.errors import OutputLockedError


def _guarded(error: BaseException) -> tuple[int, str]:
    stderr = io.StringIO()

    def body() -> int:
        raise error

    return run_guarded(body, stderr=stderr), stderr.getvalue()


@pytest.mark.parametrize("error, code, line", [
    (Interrupted(signal.SIGTERM), EXIT_SIGNAL_BASE + signal.SIGTERM, "vl2: interrupted by SIGTERM; "),
    (Interrupted(signal.SIGINT), EXIT_SIGNAL_BASE + signal.SIGINT, "vl2: interrupted by SIGINT; "),
    (KeyboardInterrupt(), EXIT_SIGNAL_BASE + signal.SIGINT, "vl2: interrupted by SIGINT; "),
    (OutputLockedError("out.jsonl is being written by another vl2 run"), EXIT_FATAL,
     "vl2: error: out.jsonl is being written by another vl2 run"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/out.jsonl"), EXIT_FATAL,
     "vl2: error: /ro/out.jsonl: Permission denied (what was written so far is intact)"),
    (KeyError("frames"), EXIT_FATAL, f"vl2: internal error: KeyError: 'frames' ({BUG_HINT})"),
], ids=["sigterm", "sigint", "bare ctrl-c", "vl2 error", "os error", "bug"])
def test_each_failure_is_one_line_and_its_exit_code(error: BaseException, code: int, line: str) -> None:
    got, stderr = _guarded(error)
    assert got == code
    assert stderr.startswith(line) and stderr.count("\n") == 1 and "Traceback" not in stderr, stderr


def test_a_bug_with_a_long_message_is_still_one_line() -> None:
    code, stderr = _guarded(RuntimeError("first line\n  second line\n  third"))
    assert code == EXIT_FATAL and stderr == f"vl2: internal error: RuntimeError: first line ({BUG_HINT})\n"


def test_a_body_s_own_exit_code_and_click_s_exits_pass_through() -> None:
    assert run_guarded(lambda: 1) == 1 and run_guarded(lambda: None) == EXIT_OK
    with pytest.raises(typer.Exit):
        _guarded(typer.Exit(3))


def test_report_and_export_report_like_every_other_command(tmp_path: Path) -> None:
    """They parse their own options (forwarded sub-commands) but end through the same guard."""
    runner = CliRunner()
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing.jsonl"), "--out", str(tmp_path / "r.html")])
    assert missing.exit_code == EXIT_FATAL and missing.output.startswith("vl2: error: "), missing.output
    assert "Traceback" not in missing.output and missing.output.count("\n") == 1
    blocked = tmp_path / "results.jsonl"
    blocked.write_text(json.dumps({"not": "a record"}) + "\n")
    (tmp_path / "folder.html").mkdir()  # the report's path is a folder: an OS error when it is written
    folder = runner.invoke(app, ["report", str(blocked), "--out", str(tmp_path / "folder.html")])
    assert folder.exit_code == EXIT_FATAL and "vl2: error: " in folder.output and "Traceback" not in folder.output
    bad = runner.invoke(app, ["export", "--model", str(tmp_path / "no-model"), "--engines", "sometimes"])
    assert bad.exit_code == EXIT_FATAL and "vl2: error: " in bad.output and "Traceback" not in bad.output, bad.output
