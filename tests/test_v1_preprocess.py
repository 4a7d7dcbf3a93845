"""Video-LLaMA (v1) preprocessing from the raw fixture media against upstream's goldens: frame indices,
decord's S×S frames, pixel normalisation, the BLIP-2 image squash, the audio clip times, the in-place
mean subtraction of overlapping clips, fbank + normalisation, and the 22.05 kHz resampler."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from reference_v1_fixtures import load_v1_fixture, v1_fixture_names
from vl2cli.media import videollama_v1 as v1

FIXTURES = v1_fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no Video-LLaMA v1 reference fixtures found")


@pytest.mark.parametrize("name", FIXTURES)
def test_video_frames_indices_message_and_pixels(name):
    fixture = load_v1_fixture(name)
    video = fixture.golden["preprocess"]["video"]
    frames, indices, fps = v1.decode_video_square(str(fixture.root / video["file"]), video["height"], video["n_frms"])
    assert indices == video["indices"]
    assert indices == fixture.tensors["preprocess.video_indices"].tolist()
    assert fps == pytest.approx(video["avg_fps"])
    assert v1.video_message(indices, fps) == video["msg"]
    assert torch.equal(torch.from_numpy(frames), fixture.tensors["preprocess.video_frames_resized_uint8"])
    pixels = v1.normalize_frames(frames)
    torch.testing.assert_close(pixels, fixture.tensors["preprocess.video_pixels"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FIXTURES)
def test_image_squash_and_normalisation(name):
    fixture = load_v1_fixture(name)
    size = fixture.golden["preprocess"]["video"]["height"]
    raw = Image.fromarray(fixture.tensors["preprocess.raw_image_uint8"].numpy())
    pixels = v1.image_pixels(raw, size)
    torch.testing.assert_close(pixels, fixture.tensors["preprocess.image_pixels"][0], atol=1e-6, rtol=0)


def test_frame_indices_formula():
    assert v1.frame_indices(34) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert v1.frame_indices(5) == [0, 1, 2, 3, 4]  # fewer frames than 8: every frame once


AUDIO_FIXTURES = [n for n in FIXTURES if "audio" in load_v1_fixture(n).golden["preprocess"]]


@pytest.mark.skipif(not AUDIO_FIXTURES, reason="no v1 fixture with audio goldens")
@pytest.mark.parametrize("name", AUDIO_FIXTURES)
def test_audio_clips_from_wav(name):
    fixture = load_v1_fixture(name)
    audio = fixture.golden["preprocess"]["audio"]
    waveform, rate = v1.read_audio_all_channels(str(fixture.root / audio["file"].split(" ")[0]))
    assert rate == audio["sample_rate"] and tuple(waveform.shape) == (audio["channels"], audio["samples"])
    assert [list(r) for r in v1.clip_sample_ranges(waveform.shape[1])] == audio["clip_sample_ranges"]
    assert [[str(a), str(b)] for a, b in v1.clip_times(waveform.shape[1])] == audio["clip_times_exact_fraction"]
    clips = v1.audio_clips(waveform, rate)
    expected = fixture.tensors["preprocess.audio_clips"][0]
    torch.testing.assert_close(clips, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not AUDIO_FIXTURES, reason="no v1 fixture with audio goldens")
@pytest.mark.parametrize("name", AUDIO_FIXTURES)
def test_overlapping_clips_see_earlier_in_place_mean_removal(name):
    """Subtracting each clip's mean independently differs from upstream by the amount the golden records."""
    fixture = load_v1_fixture(name)
    audio = fixture.golden["preprocess"]["audio"]
    waveform, rate = v1.read_audio_all_channels(str(fixture.root / audio["file"].split(" ")[0]))
    independent = []
    for start, end in v1.clip_sample_ranges(waveform.shape[1]):
        clip = waveform[:, start:end].clone()
        independent.append(v1.clip_fbank(clip - clip.mean()))
    expected = fixture.tensors["preprocess.audio_clips"][0]
    gap = (torch.stack(independent) - expected).abs().max().item()
    assert gap == pytest.approx(audio["max_abs_diff_vs_independent_per_clip_mean_removal"], rel=1e-3, abs=1e-4)
    assert (v1.audio_clips(waveform, rate) - expected).abs().max().item() < 1e-4  # upstream's shared shifts


@pytest.mark.skipif(not AUDIO_FIXTURES, reason="no v1 fixture with audio goldens")
@pytest.mark.parametrize("name", AUDIO_FIXTURES)
def test_resampled_audio_and_its_last_clip(name):
    fixture = load_v1_fixture(name)
    audio = fixture.golden["preprocess"]["audio22k"]
    waveform, rate = v1.read_audio_all_channels(str(fixture.root / audio["file"]))
    assert rate == audio["resample_call"]["orig_freq"]
    resampled = v1.resample(waveform, rate)
    torch.testing.assert_close(resampled, fixture.tensors["preprocess.audio22k_resampled_waveform"], atol=1e-6, rtol=0)
    assert [list(r) for r in v1.clip_sample_ranges(resampled.shape[1])] == audio["clip_sample_ranges"]
    clips = v1.audio_clips(waveform, rate)
    for k in audio["stored_clips"]:
        torch.testing.assert_close(clips[k], fixture.tensors[f"preprocess.audio22k_clip_{k}"], atol=1e-4, rtol=1e-4)


# ------------------------------------------- the decoder rule on the v1 path (issue 20)
def test_v1_frames_of_an_archive_format_are_the_players_at_upstreams_indices(tmp_path):
    """MPEG-2 in TS, where decord seeks wrongly: the v1 path decodes with PyAV, squashes the player's
    frames at upstream's indices to S×S, and says so; a well-formed MP4 stays on decord."""
    import numpy as np
    from PIL import Image

    from media_helpers import synth

    size = 32
    path = synth.write_gop_video(tmp_path / "mpeg2.ts", "mpeg2video", "mpegts", options={"g": "12", "bf": "2"})
    video = v1.decode_v1_video(str(path), size, 8)
    reference = synth.player_frames(path)
    assert video.backend == "pyav" and "not decord" in video.notes[0]
    assert video.indices == v1.frame_indices(len(reference), 8)
    for frame, index in zip(video.frames, video.indices):
        expected = np.asarray(Image.fromarray(reference[index]).resize((size, size), Image.BICUBIC))
        np.testing.assert_array_equal(frame, expected)
    plain = synth.write_gop_video(tmp_path / "plain.mp4", "libx264", None, options={"g": "12"})
    assert v1.decode_v1_video(str(plain), size, 8).backend == "decord"


def test_v1_hears_the_default_flagged_track_not_the_first(tmp_path):
    from media_helpers import synth

    path = synth.write_av_tracks(tmp_path / "dub.mkv", container_format="matroska",
                                 tracks=((300.0, False, 0.0), (1000.0, True, 0.0)))
    waveform, rate = v1.read_audio_all_channels(str(path))
    assert v1.audio_stream_index(str(path)) == 2
    pcm = waveform[0].numpy()
    spectrum = abs(__import__("numpy").fft.rfft(pcm[rate // 2: rate * 2]))
    assert abs(spectrum.argmax() * rate / len(pcm[rate // 2: rate * 2]) - 1000.0) < 5
