"""`--help` is a reference a user can trust: no `<bool>` placeholders for switches, every setting's
default shown, only the options that do something for the command, and a missing question named."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vl2cli.cli import app
from vl2cli.settings import COMMAND_SETTINGS, setting_flag
from vl2cli.settings import DEFAULT_MAX_NEW_TOKENS
from vl2cli.commands.exit_codes import EXIT_FATAL

COMMANDS = (["caption"], ["ask"], ["classify"], ["chat"], ["config", "show"], ["export"], ["report"])
runner = CliRunner()


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [[], *COMMANDS, ["convert"]], ids=lambda c: " ".join(c) or "vl2")
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
        flag = setting_flag(name)
        assert "[default: " in rows[flag], f"{' '.join(command)} {flag}: no default shown"
    if "max_new_tokens" in COMMAND_SETTINGS[" ".join(command)]:
        assert f"[default: {DEFAULT_MAX_NEW_TOKENS}]" in rows["--max-new-tokens"]
    else:
        assert "--max-new-tokens" not in rows


def test_options_that_do_nothing_for_a_command_are_not_offered() -> None:
    for command in ("caption", "classify"):
        assert "--json" not in _option_rows(_help(command))
    assert "--json" in _option_rows(_help("ask")) and "--json" in _option_rows(_help("chat"))
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


def _help_at_80(*command: str) -> str:
    """--help as an 80-column terminal shows it (in a subprocess: rich fixes the width once per process)."""
    env = {**os.environ, "COLUMNS": "80", "TERMINAL_WIDTH": "80", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("FORCE_COLOR", None)
    result = subprocess.run([sys.executable, "-m", "vl2cli.cli", *command, "--help"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    return result.stdout


#: `vl2 caption --help` at 80 columns was 186 lines before the help texts were cut down.
CAPTION_HELP_MOST_LINES = 140


def test_caption_help_is_short_at_80_columns() -> None:
    assert len(_help_at_80("caption").splitlines()) <= CAPTION_HELP_MOST_LINES


def test_every_option_of_a_command_is_generated_from_its_setting() -> None:
    """Flags, panel and help of each setting's option come from its declaration in Settings; the only
    other options are the few that are not settings."""
    from vl2cli.cli import setting_option_help
    from vl2cli.settings import SETTING_NAMES, setting_flags, setting_metadata

    not_settings = {"help", "config", "dry_run", "questions"}
    group = typer.main.get_command(app)
    for command in COMMANDS:
        click_command = group.commands[command[0]]
        if len(command) > 1:
            click_command = click_command.commands[command[1]]
        options = [p for p in click_command.params if p.param_type_name == "option"]
        taken = {p.name for p in options if p.name in SETTING_NAMES}
        assert taken == set(COMMAND_SETTINGS[" ".join(command)]), command
        for param in options:
            if param.name not in SETTING_NAMES:
                assert param.name in not_settings, (command, param.name)
                continue
            declared = [f for spec in setting_flags(param.name) for f in spec.split("/")]
            assert sorted([*param.opts, *param.secondary_opts]) == sorted(declared), param.name
            assert param.help == setting_option_help(param.name)
            assert getattr(param, "rich_help_panel", None) == setting_metadata(param.name)["group"]


@pytest.mark.parametrize("command", [[], *COMMANDS, ["shards"], ["merge"], ["inspect"], ["convert"]],
                         ids=lambda c: " ".join(c) or "vl2")
def test_no_command_lists_shell_completion_options(command: list[str]) -> None:
    text = _help(*command)
    assert "--install-completion" not in text and "--show-completion" not in text


def test_help_says_what_a_user_needs() -> None:
    assert "pip install 'vl2[ray]'" in " ".join(_help(*["caption"]).split())
    chat = _help("chat")
    assert "reads paths from stdin" not in chat and "stdin carries the questions" in chat
    ask = [line.strip() for line in _help_at_80("ask").splitlines()]
    assert 'vl2 ask clip.mp4 "what sound is heard?"' in ask  # one example per line, not run together
    assert 'vl2 ask ./videos "is there a dog?" --out answers.jsonl' in ask


def test_an_option_of_another_command_names_that_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["caption", str(tmp_path), "--labels", "a,b"])
    assert result.exit_code == 2
    assert "it is an option of vl2 classify" in result.output and "--frames" not in result.output
