"""Frame and audio-clip selection as pure functions, against the indices upstream recorded."""
from __future__ import annotations

from fractions import Fraction

import pytest

from media_helpers.fixtures import golden_json, goldens_of_kind
from vl2cli.errors import MediaError
from vl2cli.media.sampling import (
    audio_clip_slices,
    clip_frame_range,
    sample_frame_indices,
    uniform_segment_midpoints,
)

VIDEOS = [s for s in goldens_of_kind("video") if "decord" in golden_json(s)]
pytestmark = pytest.mark.skipif(not VIDEOS, reason="media fixtures not found (set VL2_MEDIA_FIXTURES)")


@pytest.mark.parametrize("stem", VIDEOS)
def test_uniform_indices_equal_upstream(stem: str) -> None:
    meta = golden_json(stem)
    total, fps = meta["decord"]["num_frames"], meta["decord"]["avg_fps"]
    for num_frames, expected in meta["frame_indices"].items():
        assert sample_frame_indices(total, fps, int(num_frames)) == expected


@pytest.mark.parametrize("stem", VIDEOS)
def test_one_fps_mode_equals_upstream(stem: str) -> None:
    meta = golden_json(stem)
    expected = meta["frame_indices_fps_mode_num_frames_None"]["kept_after_MAX_FRAMES_32"]
    assert sample_frame_indices(meta["decord"]["num_frames"], meta["decord"]["avg_fps"], None) == expected


@pytest.mark.parametrize("stem", VIDEOS)
def test_audio_clip_slices_equal_pytorchvideo(stem: str) -> None:
    audio = golden_json(stem)["audio"]
    num_samples = round(audio["audio_duration_s_used_by_sampler"] * 16000)
    slices = audio_clip_slices(num_samples)
    assert [list(s) for s in slices] == audio["clip_sample_slices"]
    exact = [[str(Fraction(a, 16000)) for a in pair] for pair in slices]
    assert len(exact) == len(audio["clip_timepoints_s"])
    concatenated = sum(min(b, num_samples) - a for a, b in slices)
    assert concatenated == audio["concatenated_len_samples"]


def test_short_videos_repeat_indices_instead_of_padding() -> None:
    assert uniform_segment_midpoints(6, 16) == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5]


def test_clip_bounds_follow_upstream_off_by_one() -> None:
    assert clip_frame_range(300, 30.0, 2.0, 4.0) == range(59, 120)
    assert clip_frame_range(300, 30.0, 4.0, 2.0) == range(59, 120)  # swapped back
    assert clip_frame_range(300, 30.0, 3.0, 3.0) == range(89, 120)  # equal -> 1 s
    assert clip_frame_range(300, 30.0, None, 100.0) == range(0, 300)  # clamped to the video
    # 61 frames, segments of 15: midpoints 7.5, 22.5, ... round up (the +1e-6 nudge) -> 8, 23, 38, 53
    assert sample_frame_indices(300, 30.0, 4, 2.0, 4.0) == [67, 82, 97, 112]


def test_clip_bounds_past_the_end_are_a_media_error() -> None:
    with pytest.raises(MediaError, match="select no frames"):
        sample_frame_indices(30, 30.0, 8, 20.0, None)


def test_last_audio_clip_starts_at_seven_eighths() -> None:
    slices = audio_clip_slices(16000 * 10)  # D = 10 s -> step = 8/8 = 1 s
    assert slices[-1] == (7 * 16000, 9 * 16000)
    assert audio_clip_slices(1000) == [(0, 32000)] * 8
