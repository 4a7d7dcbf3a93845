"""Issue 20, sound: the CLI's track, damaged packets skipped, seeks in MPEG-PS, segment windows on the
file's timeline, and truncation notes only when true. Files made with PyAV's bundled encoders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media_helpers import synth
from vl2cli.media.audio import AudioReport, decode_audio_track_16k_mono, decode_audio_window_16k_mono
from vl2cli.media.loader import Clip, MediaSpec, load_media

AUDIO_ONLY = MediaSpec(num_frames=4, image=None, want_audio=True)
RATE = 16000


def _texts(loaded) -> list[str]:
    return [note.text for note in loaded.notes]


def test_the_default_flagged_track_is_heard_not_the_first(tmp_path: Path) -> None:
    """A commentary track (300 Hz) stored first, the main sound (1 kHz) flagged default: the ffmpeg CLI,
    which upstream runs, decodes the default one."""
    path = synth.write_av_tracks(tmp_path / "dub.mkv", container_format="matroska",
                                 tracks=((300.0, False, 0.0), (1000.0, True, 0.0)))
    report = AudioReport()
    pcm = decode_audio_track_16k_mono(str(path), report=report)
    assert report.stream_index == 2
    assert synth.dominant_hertz(pcm[RATE // 2:RATE * 2]) == pytest.approx(1000.0, abs=2)
    loaded = load_media(path, AUDIO_ONLY)
    assert loaded.audio_stream_index == 2
    assert any("2 audio tracks: stream #2 was used" in text for text in _texts(loaded))


def test_without_default_flags_the_first_track_is_heard(tmp_path: Path) -> None:
    path = synth.write_av_tracks(tmp_path / "two.mp4", tracks=((300.0, False, 0.0), (1000.0, False, 0.0)))
    report = AudioReport()
    pcm = decode_audio_track_16k_mono(str(path), report=report)
    assert report.stream_index == 1
    assert synth.dominant_hertz(pcm[RATE // 2:RATE * 2]) == pytest.approx(300.0, abs=2)


def test_a_damaged_first_audio_packet_is_skipped_and_noted(tmp_path: Path) -> None:
    """A partial first AC-3 frame in an AVI: the CLI skips the packet; vl2 made the file corrupt_media."""
    good = synth.write_av_tracks(tmp_path / "good.avi", container_format="avi", video_codec="mpeg4",
                                 audio_codec="ac3")
    damaged = synth.damage_audio_packet(good, tmp_path / "damaged.avi", packet=0)
    reference = decode_audio_track_16k_mono(str(good)).astype(np.int32)
    report = AudioReport()
    pcm = decode_audio_track_16k_mono(str(damaged), report=report).astype(np.int32)
    assert report.damaged_packets == 1
    assert pcm.shape[0] == reference.shape[0] - 1536 // 3  # one 1536-sample AC-3 frame at 48 kHz less
    # past the resampler's settling, the rest is the good file's sound, one frame earlier
    assert np.abs(pcm[RATE:] - reference[RATE + 512:]).max() <= 2
    loaded = load_media(damaged, MediaSpec(num_frames=4, image=None, want_audio=True))
    assert any("1 damaged audio packet(s) could not be decoded and were skipped" in t for t in _texts(loaded))


def test_segment_windows_after_a_seek_in_an_mpeg_program_stream(tmp_path: Path) -> None:
    """After a seek, the PS demuxer hands over packets the decoder rejects and then a stale pts: every
    window after 1 s used to fail (corrupt_media) and would then be a frame off."""
    path = synth.write_av_tracks(tmp_path / "dvd.vob", container_format="vob", video_codec="mpeg2video",
                                 audio_codec="mp2", seconds=6.0)
    whole = decode_audio_track_16k_mono(str(path)).astype(np.int32)
    for start, end in [(1.5, 3.0), (3.0, 5.0), (4.2, 5.9)]:
        report = AudioReport()
        window = decode_audio_window_16k_mono(str(path), start, end, report=report).astype(np.int32)
        reference = whole[int(start * RATE):int(end * RATE)]
        assert window.shape == reference.shape and report.damaged_packets == 0
        assert np.abs(window - reference).max() <= 4
        loaded = load_media(path, Clip(str(path), start, end).spec_for(AUDIO_ONLY))
        assert loaded.fbank is not None and not loaded.audio_missing


def test_a_late_starting_track_gives_each_segment_its_own_sound(tmp_path: Path) -> None:
    """Sound from 2 s on: the window [3, 5) of the file is the track's [1, 3); before 2 s there is none."""
    path = synth.write_av_tracks(tmp_path / "late.mkv", container_format="matroska",
                                 tracks=((440.0, True, 2.0),), seconds=6.0)
    whole = decode_audio_track_16k_mono(str(path)).astype(np.int32)
    window = decode_audio_window_16k_mono(str(path), 3.0, 5.0).astype(np.int32)
    np.testing.assert_array_equal(window, whole[1 * RATE:3 * RATE])
    assert decode_audio_window_16k_mono(str(path), 0.0, 1.5).shape == (0,)
    silent = load_media(path, Clip(str(path), 0.0, 1.5).spec_for(AUDIO_ONLY))
    assert not silent.audio_missing  # the file has a track: not "no audio track"
    assert any("holds no sound in this segment" in t for t in _texts(silent))
    assert not any("truncated" in t for t in _texts(load_media(path, AUDIO_ONLY)))


def test_segment_records_do_not_claim_truncation(tmp_path: Path) -> None:
    """The check used to compare a segment's sound with the whole file's length."""
    path = synth.write_video(tmp_path / "clip.mp4", frames=150, with_audio=True)
    for start, end in [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]:
        loaded = load_media(path, Clip(str(path), start, end).spec_for(AUDIO_ONLY))
        assert not any("truncated" in t for t in _texts(loaded)), (start, _texts(loaded))


def test_a_short_video_track_beside_a_full_sound_is_not_truncation(tmp_path: Path) -> None:
    """2 s of video, 6 s of sound: the file is whole, the video just ends early."""
    short = synth.write_av_tracks(tmp_path / "short.mkv", container_format="matroska", seconds=6.0,
                                  video_seconds=2.0)
    from media_helpers.fixtures import PROCESSOR_CONFIGS
    from vl2cli.media.image import ImageProcessorSpec

    spec = MediaSpec(num_frames=4, image=ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["siglip384"]),
                     want_audio=True)
    loaded = load_media(short, spec)
    assert loaded.frame_indices is not None and max(loaded.frame_indices) < 50
    assert not any("truncated" in t for t in _texts(loaded))


def test_a_variable_frame_rate_mkv_is_not_called_truncated(tmp_path: Path) -> None:
    """decord's frames / average fps (100 / 30 = 3.3 s) is not the video's length (5.9 s)."""
    from media_helpers.fixtures import PROCESSOR_CONFIGS
    from vl2cli.media.image import ImageProcessorSpec

    path = synth.write_vfr_mkv(tmp_path / "vfr.mkv")
    spec = MediaSpec(num_frames=8, image=ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["siglip384"]),
                     want_audio=True)
    loaded = load_media(path, spec)
    assert loaded.video_backend == "decord" and not any("truncated" in t for t in _texts(loaded))


def test_a_gap_in_the_sound_is_not_truncation(tmp_path: Path) -> None:
    """Sound for 0-2 s and 3.5-6 s: 4.5 s of samples in a 6 s file, yet it reaches the end."""
    from fractions import Fraction

    import av

    path = tmp_path / "gap.mkv"
    rate = 16000
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        chunk = stream.codec_context.frame_size or 1024
        for first, last in ((0.0, 2.0), (3.5, 6.0)):
            for start in range(int(first * rate), int(last * rate) - chunk + 1, chunk):
                t = np.arange(start, start + chunk) / rate
                frame = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                                   format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    loaded = load_media(path, AUDIO_ONLY)
    assert loaded.audio_samples_decoded < 5.0 * rate
    assert not any("truncated" in t for t in _texts(loaded))
