"""discover_media: what a folder walk picks up, in which order, and what it reports instead of failing."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from media_helpers.unprivileged import CAN_DROP_PRIVILEGES, run_unprivileged
from vl2cli.discover import discover_media, kind_from_extension
from vl2cli.errors import Vl2Error

REPO_ROOT = Path(__file__).resolve().parents[1]


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    _touch(tmp_path, "b.mp4", "a.MOV", "notes.txt", ".hidden.mp4", "sub/z.wav", "sub/deep/c.png", "sub/y.jpg",
           ".cache/skip.mp4", "raw/skip_me.mp4")
    return tmp_path


def _names(root: Path, files: list[Path]) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


def test_walk_is_recursive_sorted_and_filtered_by_extension(tree: Path) -> None:
    found = discover_media([tree])
    assert _names(tree, found.files) == ["a.MOV", "b.mp4", "raw/skip_me.mp4", "sub/deep/c.png", "sub/y.jpg", "sub/z.wav"]
    assert all(f.is_absolute() for f in found.files)
    assert found.warnings == []


def test_non_recursive_kinds_and_globs(tree: Path) -> None:
    assert _names(tree, discover_media([tree], recursive=False).files) == ["a.MOV", "b.mp4"]
    assert _names(tree, discover_media([tree], kinds=["image"]).files) == ["sub/deep/c.png", "sub/y.jpg"]
    assert _names(tree, discover_media([tree], include=["*.mp4", "*.wav"]).files) == ["b.mp4", "raw/skip_me.mp4", "sub/z.wav"]
    assert _names(tree, discover_media([tree], exclude=["raw/*", "*.png"]).files) == ["a.MOV", "b.mp4", "sub/y.jpg", "sub/z.wav"]


def test_explicit_files_skip_the_extension_filter_and_duplicates_collapse(tree: Path) -> None:
    found = discover_media([tree / "notes.txt", tree / "sub", tree / "sub" / "y.jpg"])
    assert _names(tree, found.files) == ["notes.txt", "sub/deep/c.png", "sub/y.jpg", "sub/z.wav"]


def test_missing_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(Vl2Error, match="no such file"):
        discover_media([tmp_path / "nope"])


@pytest.mark.skipif(not CAN_DROP_PRIVILEGES, reason="needs fork to drop privileges")
def test_an_unreadable_file_named_on_the_command_line_is_listed_not_refused(tmp_path: Path) -> None:
    """It gets its `unreadable_file` record like a file met in a walk; only a missing path is refused."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    (folder / "clip.mp4").write_bytes(b"x")

    def listed() -> str:
        return ",".join(p.name for p in discover_media([folder / "clip.mp4"]).files)

    assert run_unprivileged(listed) == "clip.mp4"


def test_unknown_kind_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(Vl2Error, match="unknown media kind"):
        discover_media([tmp_path], kinds=["movie"])


def test_symlink_loops_are_warnings_and_files_are_listed_once(tree: Path) -> None:
    (tree / "sub" / "deep" / "loop").symlink_to(tree / "sub")
    (tree / "self").symlink_to(tree / "self")
    (tree / "gone.mp4").symlink_to(tree / "missing.mp4")
    found = discover_media([tree])
    assert _names(tree, found.files) == ["a.MOV", "b.mp4", "raw/skip_me.mp4", "sub/deep/c.png", "sub/y.jpg", "sub/z.wav"]
    reasons = sorted((Path(w.path).name, w.reason) for w in found.warnings)
    assert reasons == [("gone.mp4", "broken_symlink"), ("loop", "symlink_loop"), ("self", "symlink_loop")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_a_warning_not_fatal(tree: Path) -> None:
    locked = tree / "sub"
    locked.chmod(0)
    try:
        found = discover_media([tree])
    finally:
        locked.chmod(0o755)
    assert _names(tree, found.files) == ["a.MOV", "b.mp4", "raw/skip_me.mp4"]
    assert [(Path(w.path).name, w.reason) for w in found.warnings] == [("sub", "unreadable_folder")]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop to nobody")
def test_unreadable_folder_is_a_warning_not_fatal_as_an_unprivileged_user() -> None:
    """Root reads every folder, so as root (CI) the walk runs in a child process dropped to `nobody`."""
    top = Path(tempfile.mkdtemp(prefix="vl2-discover-"))
    try:
        top.chmod(0o755)
        (top / "a.mp4").write_bytes(b"x")
        (top / "locked").mkdir()
        (top / "locked" / "b.mp4").write_bytes(b"x")
        (top / "locked").chmod(0)
        script = (
            "import json, sys; from vl2cli.discover import discover_media; f = discover_media([sys.argv[1]]); "
            "print(json.dumps([[str(p) for p in f.files], [[w.path, w.reason] for w in f.warnings]]))"
        )
        run = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script, str(top)],
            capture_output=True, text=True, timeout=120, cwd=str(top), env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        assert run.returncode == 0, run.stderr
        files, warnings = json.loads(run.stdout)
        assert [Path(f).name for f in files] == ["a.mp4"]
        assert [(Path(path).name, reason) for path, reason in warnings] == [("locked", "unreadable_folder")]
    finally:
        (top / "locked").chmod(0o755)
        shutil.rmtree(top)


def test_kind_from_extension() -> None:
    assert kind_from_extension("x.WebM") == "video"
    assert kind_from_extension("x.jpeg") == "image"
    assert kind_from_extension("x.flac") == "audio"
    assert kind_from_extension("x.txt") is None


def test_archive_extensions_ffmpeg_decodes_are_walked() -> None:
    """Issue 20: these were skipped silently by a folder walk."""
    for name, kind in [("a.ac3", "audio"), ("a.mp2", "audio"), ("a.caf", "audio"), ("a.mka", "audio"),
                       ("a.spx", "audio"), ("a.dv", "video"), ("a.vob", "video"), ("a.mxf", "video"),
                       ("a.avif", "image")]:
        assert kind_from_extension(name) == kind, name
    assert kind_from_extension("a.jxl") is None  # no JPEG XL decoder in PyAV's FFmpeg or Pillow


def test_every_walked_audio_extension_made_by_pyav_probes_as_audio(tmp_path: Path) -> None:
    from media_helpers import synth
    from vl2cli.media.probe import probe_media

    for suffix, codec, fmt in [(".ac3", "ac3", "ac3"), (".mp2", "mp2", "mp2"), (".caf", "pcm_s16le", "caf"),
                               (".mka", "aac", "matroska"), (".spx", "libspeex", "ogg")]:
        import av

        if codec not in av.codecs_available:
            continue
        path = synth.write_audio(tmp_path / f"tone{suffix}", seconds=0.5, codec=codec, container_format=fmt)
        assert probe_media(path).kind == "audio", suffix
        assert kind_from_extension(path) == "audio"


def test_an_avif_photo_is_an_image(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image, features

    from vl2cli.media.probe import probe_media

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    path = tmp_path / "photo.avif"
    Image.fromarray(np.full((48, 64, 3), (200, 30, 30), np.uint8)).save(path)
    assert probe_media(path).kind == "image"
