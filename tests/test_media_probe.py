"""Kind detection by probing the container, and typed errors for files that are not usable media."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from media_helpers import synth
from media_helpers.fixtures import MEDIA_FIXTURES, golden_json, goldens_of_kind, media_path
from vl2cli.errors import CorruptMediaError, EmptyFileError, MediaError, UnsupportedMediaError
from vl2cli.media.probe import probe_media

HAVE_FIXTURES = bool(goldens_of_kind("video"))
needs_fixtures = pytest.mark.skipif(not HAVE_FIXTURES, reason="media fixtures not found (set VL2_MEDIA_FIXTURES)")
BROKEN_ERRORS = {
    "broken_empty": EmptyFileError,
    "broken_text_renamed": UnsupportedMediaError,
    "broken_truncated_30pct": CorruptMediaError,
}
EXPECTED_KIND = {"video": "video", "image": "image", "wav": "audio"}


@needs_fixtures
@pytest.mark.parametrize("stem", [s for s in goldens_of_kind("video", "image", "wav") if s not in BROKEN_ERRORS])
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


@needs_fixtures
@pytest.mark.parametrize("stem,error", sorted(BROKEN_ERRORS.items()))
def test_broken_fixtures_raise_typed_errors(stem: str, error: type[MediaError]) -> None:
    with pytest.raises(error) as caught:
        probe_media(MEDIA_FIXTURES / f"{stem}.mp4")
    assert caught.value.path.endswith(f"{stem}.mp4")


@needs_fixtures
def test_kind_comes_from_the_container_not_the_extension(tmp_path: Path) -> None:
    disguised = shutil.copy(media_path("speech_espeak_16k_mono_5s"), tmp_path / "speech.mp4")
    assert probe_media(disguised).kind == "audio"
    image = shutil.copy(media_path("img_smptehdbars_500x300"), tmp_path / "bars.mp4")
    assert probe_media(image).kind == "image"


def test_synthesised_kinds(tmp_path: Path) -> None:
    assert probe_media(synth.write_video(tmp_path / "v.mp4")).kind == "video"
    with_audio = probe_media(synth.write_video(tmp_path / "av.mp4", with_audio=True))
    assert (with_audio.kind, with_audio.has_audio, with_audio.audio_codec) == ("video", True, "aac")
    audio = probe_media(synth.write_audio(tmp_path / "a.m4a"))
    assert (audio.kind, audio.has_video, audio.audio_sample_rate) == ("audio", False, synth.AUDIO_RATE)


def test_missing_file_is_a_media_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaError, match="no such file"):
        probe_media(tmp_path / "nope.mp4")
