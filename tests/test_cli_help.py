"""`--help` is a reference a user can trust: no `<bool>` placeholders for switches, every setting's
default shown, only the options that do something for the command, and a missing question named."""
from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vl2cli.cli import COMMAND_SETTINGS, SETTING_FLAGS, app
from vl2cli.settings import DEFAULT_MAX_NEW_TOKENS
from vl2cli.commands.exit_codes import EXIT_FATAL

COMMANDS = (["caption"], ["ask"], ["classify"], ["chat"], ["config", "show"])
runner = CliRunner()


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [[], *COMMANDS, ["convert"], ["export"]], ids=lambda c: " ".join(c) or "vl2")
def test_switches_have_no_value_placeholder(command: list[str]) -> None:
    assert "<bool>" not in _help(*command)


def _option_rows(text: str) -> dict[str, str]:
    """Each option's help row, by its first long flag (one row per option at this width)."""
    rows = {}
    for line in text.splitlines():
        cells = line.strip("│ ").split()
        if cells and cells[0].startswith("--"):
            rows[cells[0]] = line
    return rows


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_setting_shows_its_default(command: list[str]) -> None:
    rows = _option_rows(_help(*command))
    for name in COMMAND_SETTINGS[" ".join(command)]:
        flag = SETTING_FLAGS[name][0][0].split("/")[0]
        assert "[default: " in rows[flag], f"{' '.join(command)} {flag}: no default shown"
    if "max_new_tokens" in COMMAND_SETTINGS[" ".join(command)]:
        assert f"[default: {DEFAULT_MAX_NEW_TOKENS}]" in rows["--max-new-tokens"]
    else:
        assert "--max-new-tokens" not in rows


def test_options_that_do_nothing_for_a_command_are_not_offered() -> None:
    for command in ("caption", "classify", "ask", "chat"):  # (caption and classify print text on a terminal too)
        assert "--json" in _option_rows(_help(command))
    assert "--json" not in _option_rows(_help("report"))
    assert "--temperature" not in _option_rows(_help("classify"))
    assert "--labels" not in _option_rows(_help("caption")) and "--prompt" not in _option_rows(_help("ask"))
    assert "--out" not in _option_rows(_help("chat")) and "--dry-run" not in _option_rows(_help("chat"))
    ask = typer.main.get_command(app).commands["ask"]  # -q is --question, so --quiet has no short form
    assert {"-q", "--question"} <= {o for p in ask.params for o in p.opts}
    assert "-q" not in next(p for p in ask.params if p.name == "quiet").opts


def test_ask_without_a_question_says_it_is_missing(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    result = runner.invoke(app, ["ask", str(clip)])
    assert result.exit_code == EXIT_FATAL
    assert "the question is missing" in result.output and "Traceback" not in result.output


def test_sampling_knobs_without_sampling_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["caption", str(tmp_path), "--seed", "3", "--dry-run"])
    assert result.exit_code == EXIT_FATAL and "set temperature above 0" in result.output
    result = runner.invoke(app, ["caption", str(tmp_path), "--temperature", "0.5", "--top-p", "1.5", "--dry-run"])
    assert result.exit_code == EXIT_FATAL and "top_p: must be above 0 and at most 1" in result.output
