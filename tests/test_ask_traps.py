"""`vl2 ask`'s argument traps (issue 22): a file taken for the question, a media file piped in as a list."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import reference_root
from vl2cli.cli import app
from vl2cli.errors import InputError
from vl2cli.input_lists import looks_like_input, read_path_list
from vl2cli.commands.exit_codes import EXIT_FATAL

TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
AV_FIXTURE = "siglip-qwen2-av"
RUN_TIMEOUT_S = 300
runner = CliRunner()


def test_a_second_file_is_not_taken_for_the_question(tmp_path: Path) -> None:
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for clip in (first, second):
        clip.write_bytes(b"x")
    result = runner.invoke(app, ["ask", str(first), str(second), "--dry-run"])
    assert result.exit_code == EXIT_FATAL and "Traceback" not in result.output
    assert "is a file, not a question" in result.output and "-q" in result.output


def test_a_media_name_that_does_not_exist_is_not_a_question_either(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    result = runner.invoke(app, ["ask", str(clip), "missing/b.MOV", "--dry-run"])
    assert result.exit_code == EXIT_FATAL and "is a file, not a question" in result.output


@pytest.mark.parametrize("question", ["what is in b.mp4?", "is it a mp4", "why?", "describe clip.mp4 briefly"])
def test_questions_that_mention_files_are_still_questions(question: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not looks_like_input(question)


def test_with_q_every_positional_is_an_input(tmp_path: Path) -> None:
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for clip in (first, second):
        clip.write_bytes(b"x")
    result = runner.invoke(app, ["ask", str(first), str(second), "-q", "who speaks?", "--dry-run",
                                 "--model", str(tmp_path / "no-such-model")])
    assert "not a question" not in result.output  # it got as far as the model (which does not exist)


def test_binary_data_piped_as_a_list_is_refused_before_any_path() -> None:
    data = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41\n\x00\x00moov\n"
    strict = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict")
    lenient = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")
    for stdin in (strict, lenient):
        with pytest.raises(InputError, match="holds binary data, not a list of paths"):
            list(read_path_list("-", stdin=stdin))


def test_a_nul_line_after_paths_is_still_only_skipped_later() -> None:
    stdin = io.StringIO("/a.mp4\n/b\0.mp4\n/c.mp4\n")
    assert list(read_path_list("-", stdin=stdin)) == ["/a.mp4", "/b\0.mp4", "/c.mp4"]  # iter_listed warns on it


@needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO,))
@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_cat_clip_into_ask_is_one_clear_error(errors: str, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("vl2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vl2cli.cli"]
    fixture = reference_root() / AV_FIXTURE
    env = {**os.environ, "PYTHONIOENCODING": f"utf-8:{errors}", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(fixture / "hub")}
    run = subprocess.run([*command, "ask", "-", "what is it?", "--model", str(fixture / "checkpoint"),
                          "--out", str(tmp_path / "out.jsonl")],
                         stdin=(MEDIA_FIXTURES / TINY_VIDEO).open("rb"), capture_output=True, text=True, env=env,
                         timeout=RUN_TIMEOUT_S)
    assert run.returncode == EXIT_FATAL
    assert "stdin: holds binary data, not a list of paths" in run.stderr and "Traceback" not in run.stderr
