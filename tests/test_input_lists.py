"""Choosing inputs: lists of paths (--files-from, `-` for stdin), case-insensitive globs, and --dry-run,
which plans the run (what would be processed, what resume would skip) without loading the model."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import REPO_ROOT, reference_root
from vl2cli.discover import WalkOptions, discover_media
from vl2cli.errors import InputError
from vl2cli.input_lists import iter_listed, read_path_list, split_stdin_marker
from vl2cli.run import walk_options
from vl2cli.settings import Settings

AV_FIXTURE = "siglip-qwen2-av"
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
needs_model_and_video = needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO,))


def test_a_list_is_read_line_by_line_keeping_spaces_and_skipping_blank_lines(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.mp4\r\n\n  b with spaces .mp4\nc.mp4")
    assert list(read_path_list(listing)) == ["a.mp4", "  b with spaces .mp4", "c.mp4"]
    assert list(read_path_list("-", stdin=io.StringIO("x.mp4\n\ny.png\n"))) == ["x.mp4", "y.png"]
    with pytest.raises(InputError, match="cannot read the list of files"):
        read_path_list(tmp_path / "missing.txt")
    assert split_stdin_marker(["a", "-", Path("b")]) == (["a", Path("b")], True)
    assert split_stdin_marker(["a"]) == (["a"], False)


def test_listed_folders_are_walked_with_the_filters_and_each_path_comes_once(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    for name in ("A.MP4", "b.mov", "sub/c.Mp4", "notes.txt"):
        (folder / name).write_bytes(b"x")
    gone = tmp_path / "gone.mp4"  # listed but absent: kept, its record will say it cannot be read
    found = list(iter_listed([str(folder), str(folder / "A.MP4"), str(gone)], include=["*.mp4"]))
    assert found == [folder / "A.MP4", folder / "sub" / "c.Mp4", gone]


def test_walk_options_are_the_settings_walk_and_hold_no_lists(tmp_path: Path) -> None:
    assert walk_options(Settings()) == WalkOptions()  # the CLI's defaults are the library's
    walk = walk_options(Settings(recursive=False, include=["*.mp4"], kinds=["video"]))
    assert walk == WalkOptions(recursive=False, include=("*.mp4",), kinds=("video",))
    assert WalkOptions(include=["*.mp4"]).include == ("*.mp4",)  # a caller's list is held as a tuple
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "b.wav", "sub/c.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in walk.iter_media([tmp_path])] == ["a.mp4"]


def test_globs_match_whatever_the_case(tmp_path: Path) -> None:
    for name in ("UPPER.MP4", "lower.mp4", "Mixed.Mov", "raw/Skip.MP4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = lambda result: sorted(p.relative_to(tmp_path).as_posix() for p in result.files)  # noqa: E731
    assert names(discover_media([tmp_path], include=["*.mp4"])) == ["UPPER.MP4", "lower.mp4", "raw/Skip.MP4"]
    assert names(discover_media([tmp_path], include=["*.MP4"], exclude=["RAW/*"])) == ["UPPER.MP4", "lower.mp4"]


def _env() -> dict[str, str]:
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_CACHE=str(reference_root() / AV_FIXTURE / "hub"), HF_HUB_OFFLINE="1")
    return env


#: Runs the CLI in a fresh interpreter, then says which heavy modules it imported and whether any
#: weights file was opened (os.open / io.open on *.safetensors are watched).
_PROBE = textwrap.dedent("""
    import builtins, io, json, sys
    opened = []
    real_open = io.open
    def watching_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)
    builtins.open = io.open = watching_open
    from vl2cli.cli import app
    try:
        app(sys.argv[1:], prog_name="vl2")
    except SystemExit as exc:
        code = exc.code
    heavy = sorted(m for m in ("torch", "transformers", "safetensors.torch") if m in sys.modules)
    weights = [f for f in opened if f.endswith((".safetensors", ".bin", ".pth"))]
    print(json.dumps({"code": code, "heavy": heavy, "weights": weights}), file=sys.stderr)
""")


def _probe(*args: str, stdin: str = "") -> tuple[dict, str, str]:
    run = subprocess.run([sys.executable, "-c", _PROBE, *args], input=stdin, capture_output=True, text=True,
                         env=_env(), timeout=300)
    report = json.loads(run.stderr.strip().splitlines()[-1])
    return report, run.stdout, run.stderr


@needs_model_and_video
def test_dry_run_lists_work_and_resume_skips_without_loading_the_model(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    for name in ("done.mp4", "new.MP4", "other.mov"):
        (folder / name).write_bytes((MEDIA_FIXTURES / TINY_VIDEO).read_bytes())
    checkpoint = str(reference_root() / AV_FIXTURE / "checkpoint")
    out = tmp_path / "out.jsonl"
    # an earlier run's record for done.mp4, with the resume key this run will compute
    from vl2cli.model.identity import CheckpointIdentity
    from vl2cli.output.record import FileStamp, Request, build_record
    identity = CheckpointIdentity.resolve(checkpoint, revision=None)
    request = Request(task="caption", prompt=None, labels=None, model_id=identity.model_id, revision=identity.revision,
                      frames=identity.num_frames, modality="auto")
    record = build_record(request, path=str(folder / "done.mp4"), stamp=FileStamp.of(folder / "done.mp4"),
                          vl2_version="0", output="a caption", modality="av")
    out.write_text(json.dumps(record) + "\n")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'gone.mp4'}\n")

    report, stdout, stderr = _probe("caption", str(folder), "-", "--include", "*.mp4", "--files-from", str(listing),
                                    "--out", str(out), "--model", checkpoint, "--dry-run",
                                    stdin=f"{folder / 'other.mov'}\n")
    assert report == {"code": 0, "heavy": [], "weights": []}, stderr
    assert stdout.splitlines() == [f"skip    {folder / 'done.mp4'}", f"process {folder / 'new.MP4'}",
                                   f"error   {tmp_path / 'gone.mp4'}", f"process {folder / 'other.mov'}"]
    assert "2 to process, 1 already done (would be skipped), 1 unreadable; the model was not loaded" in stderr
    assert out.read_text().count("\n") == 1  # a dry run writes nothing


@needs_model_and_video
def test_dry_run_of_several_questions_has_a_line_per_file_and_question(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((MEDIA_FIXTURES / TINY_VIDEO).read_bytes())
    report, stdout, stderr = _probe("ask", str(clip), "-q", "who?", "-q", "where?", "--dry-run",
                                    "--model", str(reference_root() / AV_FIXTURE / "checkpoint"))
    assert report["code"] == 0 and report["heavy"] == [], stderr
    assert stdout.splitlines() == [f"process {clip}\twho?", f"process {clip}\twhere?"]


def test_no_inputs_at_all_is_one_clear_error(tmp_path: Path) -> None:
    report, _, stderr = _probe("caption", "--dry-run")
    assert report["code"] == 2 and "no inputs" in stderr and "Traceback" not in stderr
