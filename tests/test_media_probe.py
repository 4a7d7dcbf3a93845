"""Kind detection by probing the container, and typed errors for files that are not usable media."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from media_helpers import synth
from media_helpers.unprivileged import CAN_DROP_PRIVILEGES, run_unprivileged
from media_helpers.fixtures import MEDIA_FIXTURES, golden_json, goldens_of_kind, media_path, needs_goldens, needs_media
from vl2cli.errors import CorruptMediaError, EmptyFileError, MediaError, UnreadableFileError, UnsupportedMediaError
from vl2cli.media.probe import probe_media

BROKEN_ERRORS = {
    "broken_empty": EmptyFileError,
    "broken_text_renamed": UnsupportedMediaError,
    "broken_truncated_30pct": CorruptMediaError,
}
EXPECTED_KIND = {"video": "video", "image": "image", "wav": "audio"}


@pytest.mark.parametrize("stem", [pytest.param(s, marks=needs_goldens(s))
                                  for s in goldens_of_kind("video", "image", "wav") if s not in BROKEN_ERRORS])
def test_fixture_kinds_and_facts(stem: str) -> None:
    meta = golden_json(stem)
    info = probe_media(media_path(stem))
    assert info.kind == EXPECTED_KIND[meta["kind"]]
    assert info.size_bytes == media_path(stem).stat().st_size
    if info.kind == "video":
        assert (info.height, info.width) == tuple(meta["decord"]["frame_hw"])
        assert info.avg_fps == pytest.approx(meta["decord"]["avg_fps"])
        assert info.has_audio == meta["audio"]["ffmpeg_ok"]
    if meta["kind"] == "wav":
        assert (info.audio_sample_rate, info.audio_channels) == (meta["samplerate"], meta["channels"])
    assert set(info.to_dict()) >= {"path", "kind", "duration_s", "video_codec", "audio_channels"}


@pytest.mark.parametrize("stem,error", [pytest.param(stem, error, marks=needs_media(f"{stem}.mp4"))
                                         for stem, error in sorted(BROKEN_ERRORS.items())])
def test_broken_fixtures_raise_typed_errors(stem: str, error: type[MediaError]) -> None:
    with pytest.raises(error) as caught:
        probe_media(MEDIA_FIXTURES / f"{stem}.mp4")
    assert caught.value.path.endswith(f"{stem}.mp4")


def _broken_like_the_fixtures(folder: Path, stem: str) -> Path:
    """Files broken the way the public broken_* fixtures are, made here (the test needs no golden)."""
    path = folder / f"{stem}.mp4"
    if stem == "broken_empty":
        path.write_bytes(b"")
    elif stem == "broken_text_renamed":
        path.write_text("This is a plain text file that was renamed to .mp4.\n" * 20)
    else:
        whole = synth.write_video(folder / "whole.mp4", frames=50, with_audio=True).read_bytes()
        path.write_bytes(whole[: int(len(whole) * 0.3)])
    return path


@pytest.mark.parametrize("stem,error", sorted(BROKEN_ERRORS.items()))
def test_synthesised_broken_files_raise_typed_errors(tmp_path: Path, stem: str, error: type[MediaError]) -> None:
    path = _broken_like_the_fixtures(tmp_path, stem)
    with pytest.raises(error) as caught:
        probe_media(path)
    assert caught.value.path.endswith(f"{stem}.mp4")


def test_kind_comes_from_the_container_not_the_extension(tmp_path: Path) -> None:
    disguised = shutil.copy(synth.write_pcm_wav(tmp_path / "speech.wav"), tmp_path / "speech.mp4")
    assert probe_media(disguised).kind == "audio"
    image = shutil.copy(synth.write_png(tmp_path / "bars.png"), tmp_path / "bars.mp4")
    assert probe_media(image).kind == "image"


def test_synthesised_kinds(tmp_path: Path) -> None:
    assert probe_media(synth.write_video(tmp_path / "v.mp4")).kind == "video"
    with_audio = probe_media(synth.write_video(tmp_path / "av.mp4", with_audio=True))
    assert (with_audio.kind, with_audio.has_audio, with_audio.audio_codec) == ("video", True, "aac")
    audio = probe_media(synth.write_audio(tmp_path / "a.m4a"))
    assert (audio.kind, audio.has_video, audio.audio_sample_rate) == ("audio", False, synth.AUDIO_RATE)


def test_a_file_removed_after_listing_is_unreadable_not_unsupported(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFileError, match="no longer exists") as caught:
        probe_media(tmp_path / "nope.mp4")
    assert caught.value.code == "unreadable_file"


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO with no writer would block the decoder forever."""
    fifo = tmp_path / "stream.mp4"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedMediaError, match="not a regular file"):
        probe_media(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_device_is_refused_not_called_missing() -> None:
    with pytest.raises(UnsupportedMediaError, match="not a regular file"):
        probe_media("/dev/zero")


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaError, match="a folder"):
        probe_media(tmp_path)



@pytest.mark.skipif(not CAN_DROP_PRIVILEGES, reason="needs fork to drop privileges")
def test_a_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    locked = synth.write_video(tmp_path / "locked.mp4")
    locked.chmod(0o000)

    def probe_code() -> str:
        try:
            probe_media(locked)
        except MediaError as exc:
            return exc.code
        return "read"

    assert run_unprivileged(probe_code) == "unreadable_file"
