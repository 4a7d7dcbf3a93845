"""End to end: `vl2` run as a user runs it (a subprocess) on the tiny reference checkpoints and media."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, have_media
from reference_fixtures import load_reference, reference_root
from vl2cli import __version__, api
from vl2cli.output import load_schema
from vl2cli.commands.exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED

AV_FIXTURE = "siglip-qwen2-av"
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
IMAGE = "img_smptehdbars_500x300.png"
SPEECH = "speech_espeak_16k_mono_5s.wav"
BROKEN = ("broken_empty.mp4", "broken_text_renamed.mp4")
RUN_TIMEOUT_S = 300


def needs_model_and(*media: str):
    """A skip marker for a test that runs the tiny AV model on exactly these media files; the reason names
    what is missing (a fixture set swapped in may hold only some of them)."""
    missing = [] if (reference_root() / AV_FIXTURE).is_dir() else [AV_FIXTURE]
    missing += [name for name in media if not have_media(name)]
    return pytest.mark.skipif(bool(missing), reason=f"fixtures not found: {', '.join(missing)}")


def _vl2_command() -> list[str]:
    script = Path(sys.executable).with_name("vl2")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vl2cli.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    fixture = reference_root() / AV_FIXTURE
    env.update(HF_HUB_CACHE=str(fixture / "hub"), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def _model_args() -> list[str]:
    return ["--model", str(reference_root() / AV_FIXTURE / "checkpoint"), "--max-new-tokens", "4"]


def vl2(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_vl2_command(), *args], capture_output=True, text=True, env=_env(**env), cwd=cwd,
                          timeout=RUN_TIMEOUT_S)


def vl2_in_process(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`vl2 ARGS` run in this process (typer's test runner), for tests where a subprocess is not the point:
    the same app, settings and error handling, without paying an interpreter and torch import per call."""
    from typer.testing import CliRunner

    from vl2cli.cli import app

    environment = {k: None for k in os.environ if k.startswith("VL2_") and k not in _ISOLATED}
    environment.update(_env(**env))
    result = CliRunner().invoke(app, list(args), env=environment, prog_name="vl2")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["vl2", *args], result.exit_code, result.stdout, result.stderr)


#: Set by tests/conftest.py for the whole session; the in-process runner keeps them.
_ISOLATED = ("VL2_HOME", "VL2_EXPORT_DIR", "VL2_ENGINE_DIR")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _validate(records: list[dict]) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    for record in records:
        validator.validate(record)


def _copy(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(MEDIA_FIXTURES / name, folder / name)
    return folder


# ------------------------------------------------------------------ no model needed
def test_help_version_and_fatal_errors(tmp_path: Path) -> None:
    help_run = vl2_in_process("--help")
    assert help_run.returncode == 0 and 'vl2 ask clip.mp4 "what sound is heard?"' in help_run.stdout
    assert "--batch-size" in vl2_in_process("caption", "--help").stdout
    assert "export" in help_run.stdout
    export_help = vl2_in_process("export", "--help")  # forwarded to the export command, imported only then
    assert export_help.returncode == 0 and "--model" in export_help.stdout and "Usage: vl2 export" in export_help.stdout
    assert vl2("--version").stdout.strip() == f"vl2 {__version__}"  # the installed entry point itself
    missing = vl2_in_process("caption", str(tmp_path / "nope"))
    assert missing.returncode == EXIT_FATAL and "no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_config_show_reports_precedence(tmp_path: Path) -> None:
    config = tmp_path / "vl2.yaml"
    config.write_text("batch_size: 2\nworkers: 7\nframes: 6\nlabels: [a, b]\n")
    shown = vl2_in_process("config", "show", "--config", str(config), "--workers", "3", VL2_FRAMES="8")
    assert shown.returncode == 0, shown.stderr
    lines = {line.split(":", 1)[0]: line for line in shown.stdout.splitlines() if not line.startswith("#")}
    assert lines["batch_size"].startswith("batch_size: 2  # config")
    assert lines["workers"].startswith("workers: 3  # flag")
    assert lines["frames"].startswith("frames: 8  # env")
    assert lines["labels"].startswith("labels: [a, b]  # config")
    assert lines["modality"].startswith("modality: auto  # default")
    config.write_text("batch_sise: 2\n")
    bad = vl2_in_process("config", "show", "--config", str(config))
    assert bad.returncode == EXIT_FATAL and "unknown setting(s) batch_sise" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------ with the tiny AV model
@pytest.mark.slow
@needs_model_and(TINY_VIDEO, IMAGE, SPEECH, *BROKEN)
def test_caption_folder_with_bad_files_gives_every_file_a_record(tmp_path: Path) -> None:
    folder = _copy(tmp_path / "videos", TINY_VIDEO, IMAGE, *BROKEN)
    _copy(folder / "sub", SPEECH)
    out = tmp_path / "out" / "captions.jsonl"
    first = vl2("caption", str(folder), "--out", str(out), "--batch-size", "2", *_model_args())
    assert first.returncode == EXIT_SOME_FAILED, first.stderr
    records = _lines(out)
    _validate(records)
    by_name = {Path(r["path"]).name: r for r in records}
    assert sorted(by_name) == sorted([TINY_VIDEO, IMAGE, SPEECH, *BROKEN]) and len(records) == 5
    assert {by_name[n]["error"]["code"] for n in BROKEN} == {"empty_file", "unsupported_media"}
    for name in (TINY_VIDEO, IMAGE, SPEECH):
        assert by_name[name]["error"] is None and isinstance(by_name[name]["output"], str)
    assert (by_name[TINY_VIDEO]["modality"], by_name[IMAGE]["modality"], by_name[SPEECH]["modality"]) == ("av", "image", "audio")
    assert "5 files: 3 done, 0 skipped, 2 failed" in first.stderr
    assert sum("vl2: failed:" in line for line in first.stderr.splitlines()) == 2


@needs_model_and(TINY_VIDEO)
def test_ask_one_file_prints_just_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = _copy(tmp_path, TINY_VIDEO) / TINY_VIDEO
    run = vl2_in_process("ask", str(clip), "what sound is heard?", *_model_args())
    assert run.returncode == EXIT_OK, run.stderr
    fixture = load_reference(AV_FIXTURE)
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = api.ask(api.load_model(str(fixture.checkpoint)), clip, "what sound is heard?", max_new_tokens=4, workers=1)
    assert run.stdout == expected[0]["output"] + "\n"


@needs_model_and(TINY_VIDEO, IMAGE)
def test_classify_folder_to_stdout(tmp_path: Path) -> None:
    folder = _copy(tmp_path / "clips", TINY_VIDEO, IMAGE)
    labels = tmp_path / "labels.txt"
    labels.write_text("cooking\nsports\nmusic\n")
    run = vl2_in_process("classify", str(folder), "--labels", f"@{labels}", "--top-k", "2", "--out", "-", *_model_args()[:2])
    assert run.returncode == EXIT_OK, run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines()]
    _validate(records)
    assert [Path(r["path"]).name for r in records] == sorted([TINY_VIDEO, IMAGE])
    for record in records:
        assert record["labels"] == ["cooking", "sports", "music"] and len(record["top_k"]) == 2
        scores = record["label_scores"]
        best = max(scores, key=lambda s: s["log_likelihood"])
        assert record["output"] == best["label"] == scores[0]["label"]
        assert sum(s["probability"] for s in scores) == pytest.approx(1.0)


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no record within {timeout_s} s (exit {process.poll()})")


@pytest.mark.slow
@needs_model_and(TINY_VIDEO, IMAGE)
def test_sigkill_mid_run_then_rerun_leaves_each_file_once_and_lock_refuses_a_second_run(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    names = [f"clip{i:02d}.mp4" for i in range(10)] + [f"still{i:02d}.png" for i in range(2)]
    folder.mkdir()
    for name in names:
        shutil.copy(MEDIA_FIXTURES / (TINY_VIDEO if name.endswith(".mp4") else IMAGE), folder / name)
    out = tmp_path / "out.jsonl"
    args = ["caption", str(folder), "--out", str(out), "--batch-size", "1", "--workers", "1", *_model_args()]
    first = subprocess.Popen([*_vl2_command(), *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        _wait_for_lines(out, 1, first, RUN_TIMEOUT_S)
        # Frozen (its whole group, decoders included) once its first record is out: it holds the lock,
        # alive, for as long as the second run takes, however fast it would have gone on.
        os.killpg(first.pid, signal.SIGSTOP)
        assert first.poll() is None, "the first run ended before it could be stopped"
        second = vl2(*args)
        assert second.returncode == EXIT_FATAL and "another vl2 run" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    written_before_kill = out.read_bytes().count(b"\n")
    assert 1 <= written_before_kill < len(names)
    rerun = vl2(*args)
    assert rerun.returncode == EXIT_OK, rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]  # every line parses
    assert sorted(Path(r["path"]).name for r in records) == sorted(names)  # each file exactly once
    assert f"{len(names) - written_before_kill} done, {written_before_kill} skipped" in rerun.stderr


@pytest.mark.parametrize("where", ["a_folder", "under_a_file"])
def test_an_output_that_cannot_be_written_is_one_error_line(tmp_path: Path, capsys, where: str) -> None:
    """In-process: the CLI's guard turns OS errors on the output into `vl2: error:` and exit 2."""
    from typer.testing import CliRunner

    from vl2cli.cli import app

    (tmp_path / "a_folder").mkdir()
    (tmp_path / "file").write_text("x")
    out = {"a_folder": tmp_path / "a_folder", "under_a_file": tmp_path / "file" / "out.jsonl"}[where]
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read before the output fails")
    result = CliRunner().invoke(app, ["caption", str(clip), "--out", str(out), "--quiet"])
    assert result.exit_code == EXIT_FATAL
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vl2: error: ") and "Traceback" not in result.output


@pytest.mark.slow
@needs_model_and(TINY_VIDEO)
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_is_one_line_and_its_exit_code(tmp_path: Path, sent: signal.Signals) -> None:
    from vl2cli.commands.exit_codes import EXIT_SIGNAL_BASE

    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(12):
        shutil.copy(MEDIA_FIXTURES / TINY_VIDEO, folder / f"clip{i:02d}.mp4")
    out = tmp_path / "out.jsonl"
    args = ["caption", str(folder), "--out", str(out), "--batch-size", "1", "--workers", "2", "--quiet", *_model_args()]
    run = subprocess.Popen([*_vl2_command(), *args], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    try:
        _wait_for_lines(out, 1, run, RUN_TIMEOUT_S)
        os.killpg(run.pid, sent)  # the whole group, workers too, as a terminal's Ctrl-C or a job killer does
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    assert run.returncode == EXIT_SIGNAL_BASE + sent, stderr
    assert "Traceback" not in stderr and stderr.count("vl2: interrupted") == 1, stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]  # nothing torn
    assert 1 <= len(records) < 12
