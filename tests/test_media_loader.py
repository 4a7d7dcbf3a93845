"""load_media end to end: shapes, routing by kind, reported silence, typed errors, decoder fallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from media_helpers import synth
from media_helpers.fixtures import GOLDEN, MEDIA_FIXTURES, PROCESSOR_CONFIGS, golden_json, media_path, needs_goldens, needs_media
from vl2cli.constants import BEATS_FBANK_STD
from vl2cli.errors import CorruptMediaError, EmptyFileError, MediaError, UnsupportedMediaError
from vl2cli.media.image import ImageProcessorSpec
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media

SIGLIP = ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["siglip384"])
AV_SPEC = MediaSpec(num_frames=4, image=SIGLIP, want_audio=True)


@needs_goldens("av_testsrc2_320x240_30fps_h264_aac_stereo_10s")
def test_av_video_matches_goldens() -> None:
    stem = "av_testsrc2_320x240_30fps_h264_aac_stereo_10s"
    golden = load_file(GOLDEN / f"{stem}.safetensors")
    loaded = load_media(media_path(stem), AV_SPEC)
    assert loaded.info.kind == "video" and loaded.frame_indices == golden_json(stem)["frame_indices"]["4"]
    assert loaded.pixel_values.shape == (4, 3, 384, 384)
    assert (loaded.pixel_values[[0, 3]] - golden["siglip384_pixel_values_nf4"]).abs().max() <= 1e-5
    assert loaded.fbank.shape == (2998, 128) and loaded.fbank.dtype == torch.float32
    assert torch.equal(loaded.fbank, loaded.fbank.to(torch.bfloat16).float())  # bf16-rounded values
    assert not loaded.audio_missing and loaded.audio_samples_decoded == 160085
    assert {"probe", "decode_video", "preprocess_frames", "decode_audio", "fbank"} <= set(loaded.timings_ms)


@needs_goldens("v_testsrc2_640x360_25fps_h264_noaudio_7p3s")
def test_video_without_audio_is_reported_and_matches_upstream_silence() -> None:
    stem = "v_testsrc2_640x360_25fps_h264_noaudio_7p3s"
    loaded = load_media(media_path(stem), AV_SPEC)
    assert loaded.audio_missing
    expected = load_file(GOLDEN / f"{stem}.safetensors")["fbank"].to(torch.bfloat16).float()
    assert torch.equal(loaded.fbank, expected)


@needs_goldens("img_mandelbrot_300x451", "speech_espeak_16k_mono_5s", "av_tiny_128x96_30fps_h264_aac_6frames")
def test_image_and_audio_routing() -> None:
    image = load_media(media_path("img_mandelbrot_300x451"), AV_SPEC)
    assert image.pixel_values.shape == (1, 3, 384, 384) and image.fbank is None and not image.audio_missing
    audio = load_media(media_path("speech_espeak_16k_mono_5s"), AV_SPEC)
    assert audio.pixel_values is None and audio.fbank.shape == (2998, 128)
    video_only = load_media(media_path("av_tiny_128x96_30fps_h264_aac_6frames"),
                            MediaSpec(num_frames=16, image=SIGLIP, want_audio=False))
    assert video_only.fbank is None and video_only.frame_indices == golden_json(
        "av_tiny_128x96_30fps_h264_aac_6frames")["frame_indices"]["16"]


@needs_goldens("tone_44k1_stereo_40s")
def test_audio_file_window_override_reaches_the_golden() -> None:
    stem = "tone_44k1_stereo_40s"
    loaded = load_media(media_path(stem), MediaSpec(num_frames=4, image=None, want_audio=True, audio_window_start=201979))
    golden = load_file(GOLDEN / f"{stem}.safetensors")["fbank"].to(torch.bfloat16).float()
    one_bf16_step = golden.abs() * 2.0 ** -7  # 8 significant bits: a step is at most |x|/128
    fbank_tolerance = 1e-3 * 2 * BEATS_FBANK_STD  # the normalised 1e-3 bar, in raw fbank units
    assert torch.all((loaded.fbank - golden).abs() <= one_bf16_step + fbank_tolerance)
    assert (loaded.fbank != golden).float().mean().item() < 0.02


@needs_goldens("av_vfr_320x240_h264_aac_6s")
def test_backends_agree() -> None:
    path = media_path("av_vfr_320x240_h264_aac_6s")
    spec = MediaSpec(num_frames=8, image=SIGLIP, want_audio=False)
    by_decord = load_media(path, spec)
    by_pyav = load_media(path, MediaSpec(num_frames=8, image=SIGLIP, want_audio=False, video_backend="pyav"))
    assert (by_decord.video_backend, by_pyav.video_backend) == ("decord", "pyav")
    assert torch.equal(by_decord.pixel_values, by_pyav.pixel_values)


@pytest.mark.parametrize("name,error", [
    pytest.param(name, error, marks=needs_media(name)) for name, error in [
        ("broken_empty.mp4", EmptyFileError), ("broken_text_renamed.mp4", UnsupportedMediaError),
        ("broken_truncated_30pct.mp4", CorruptMediaError)]])
def test_broken_fixtures(name: str, error: type[MediaError]) -> None:
    with pytest.raises(error):
        load_media(MEDIA_FIXTURES / name, AV_SPEC)


def test_av1_falls_back_to_pyav(tmp_path: Path) -> None:
    path = synth.write_video(tmp_path / "clip.mp4", codec="libsvtav1", frames=12, width=128, height=96)
    loaded = load_media(path, MediaSpec(num_frames=4, image=SIGLIP, want_audio=True))
    assert "av1" in loaded.info.video_codec and loaded.video_backend == "pyav"
    assert loaded.frame_indices == [1, 4, 7, 10] and loaded.audio_missing


def test_damaged_video_gives_tensors_or_a_typed_error(tmp_path: Path) -> None:
    """Noise over the frame data: FFmpeg conceals slice errors, so either output or a MediaError, never a crash."""
    good = synth.write_video(tmp_path / "good.mp4", frames=50, with_audio=True)
    for backend in ("decord", "pyav"):
        damaged = synth.corrupt_middle(good, tmp_path / "damaged.mp4")
        try:
            result = load_media(damaged, MediaSpec(num_frames=8, image=SIGLIP, want_audio=True, video_backend=backend))
        except MediaError as exc:
            assert exc.code in {"corrupt_media", "unsupported_media"}
        else:
            assert isinstance(result, LoadedMedia) and result.pixel_values.shape == (8, 3, 384, 384)
            assert np.isfinite(result.fbank.numpy()).all()


def test_audio_with_nan_or_infinite_samples_is_corrupt_not_captioned(tmp_path: Path) -> None:
    samples = np.sin(np.arange(32000) / 10).astype(np.float32)
    samples[1000:1100] = np.nan
    samples[5000] = np.inf
    path = synth.write_float_wav(tmp_path / "nan.wav", samples)
    with pytest.raises(CorruptMediaError, match="101 of 32000 audio samples are NaN or infinite"):
        load_media(path, MediaSpec(num_frames=4, image=None, want_audio=True))


def test_a_wav_without_samples_is_empty_not_silence(tmp_path: Path) -> None:
    path = synth.write_float_wav(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(EmptyFileError, match="no samples"):
        load_media(path, MediaSpec(num_frames=4, image=None, want_audio=True))


def test_finite_float_audio_loads(tmp_path: Path) -> None:
    path = synth.write_float_wav(tmp_path / "tone.wav", 0.5 * np.sin(np.arange(32000) / 10))
    loaded = load_media(path, MediaSpec(num_frames=4, image=None, want_audio=True))
    assert loaded.fbank.shape == (2998, 128) and torch.isfinite(loaded.fbank).all()


def test_a_truncated_file_that_still_decodes_says_so(tmp_path: Path) -> None:
    """A cut-off copy (Matroska decodes up to the cut) is used, with a note per stream; the whole file is not."""
    whole = synth.write_video(tmp_path / "whole.mkv", frames=150, with_audio=True, container_format="matroska")
    data = whole.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    spec = MediaSpec(num_frames=8, image=SIGLIP, want_audio=True)
    assert load_media(whole, spec).notes == []
    loaded = load_media(cut, spec)
    assert [note.stream for note in loaded.notes] == ["video", "audio"]
    assert all("looks truncated" in note.text and "of the 6.0 s" in note.text for note in loaded.notes)
    assert max(loaded.frame_indices) < 100  # sampled from what is there


def test_truncation_note_thresholds() -> None:
    from vl2cli.media.loader import truncation_note

    assert truncation_note("video", 9.95, 10.0) is None  # a frame or two short: well-formed
    assert truncation_note("audio", 99.0, 100.0) is None  # 1 s of 100 s: under 5 %
    assert truncation_note("audio", 8.5, 10.0).stream == "audio"
    assert truncation_note("video", 5.0, None) is None  # nothing declared


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_damaged_packet_mid_file_costs_frames_not_the_file(tmp_path: Path, backend: str) -> None:
    good = synth.write_video(tmp_path / "good.mp4", frames=100, width=160, height=120, with_audio=True)
    damaged = synth.damage_video_packet(good, tmp_path / "damaged.mp4", packet=50)
    spec = MediaSpec(num_frames=16, image=SIGLIP, want_audio=True, video_backend=backend)
    reference = load_media(good, spec)
    loaded = load_media(damaged, spec)
    assert loaded.frame_indices == reference.frame_indices
    before = [k for k, index in enumerate(loaded.frame_indices) if index < 48]
    assert torch.equal(loaded.pixel_values[before], reference.pixel_values[before])
    assert [note.stream for note in loaded.notes] == ["video"]
    assert "1 damaged video packet(s) could not be decoded" in loaded.notes[0].text
    assert torch.equal(loaded.fbank, reference.fbank)
