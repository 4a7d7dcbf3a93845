"""Which frames and which audio samples upstream VideoLLaMA 2 looks at, as pure functions of lengths.

Kept free of any decoder so the exact index arithmetic (float rounding, `Fraction` slicing) can be
tested against upstream's recorded values without opening a file.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from vl2cli.constants import (
    AUDIO_CLIP_SECONDS,
    AUDIO_CLIPS_PER_VIDEO,
    AUDIO_SAMPLE_RATE,
    MAX_FRAMES,
)
from vl2cli.errors import MediaError

#: Upstream adds this before `np.round` so exact .5 midpoints round up instead of half-to-even.
_MIDPOINT_ROUNDING_NUDGE = 1e-6
#: Upstream's 1-fps mode takes one frame per this many seconds (`NUM_FRAMES_PER_SECOND` = 1).
_FPS_MODE_FRAMES_PER_SECOND = 1


def uniform_segment_midpoints(duration: int, num_frames: int) -> list[int]:
    """Upstream `frame_sample(mode='uniform')`: the middle of each of `num_frames` equal segments.

    The arithmetic is kept in upstream's order ((start + end) / 2 in float64) because the rounding of
    exact halves depends on it. With fewer frames than `num_frames` positions simply repeat.
    """
    seg_size = float(duration - 1) / num_frames
    mids = [(seg_size * i + seg_size * (i + 1)) / 2 for i in range(num_frames)]
    return np.round(np.array(mids) + _MIDPOINT_ROUNDING_NUDGE).astype(int).tolist()


def one_per_second_positions(duration: int, fps: float) -> list[int]:
    """Upstream `frame_sample(mode='fps')` then the `MAX_FRAMES` truncation (not a resampling)."""
    segment_len = min(fps // _FPS_MODE_FRAMES_PER_SECOND, duration)
    return np.arange(segment_len // 2, duration, segment_len, dtype=int).tolist()[:MAX_FRAMES]


def clip_frame_range(total_frames: int, fps: float, start_s: float | None = None,
                     end_s: float | None = None) -> range:
    """Frames inside upstream's `s`/`e` clip bounds (seconds), with upstream's off-by-one `int(t*fps)-1`.

    As upstream: negative bounds become 0, swapped bounds are swapped back, equal bounds become a 1 s clip
    (those fixes apply only when both bounds are given).
    """
    if start_s is not None and end_s is not None:
        start_s, end_s = max(start_s, 0.0), max(end_s, 0.0)
        if start_s > end_s:
            start_s, end_s = end_s, start_s
        elif start_s == end_s:
            end_s = start_s + 1
    first = 0 if start_s is None else max(int(start_s * fps) - 1, 0)
    last = total_frames - 1 if end_s is None else min(int(end_s * fps) - 1, total_frames - 1)
    return range(first, last + 1)


def sample_frame_indices(total_frames: int, fps: float, num_frames: int | None,
                         start_s: float | None = None, end_s: float | None = None) -> list[int]:
    """Absolute frame indices upstream `process_video` decodes (uniform when `num_frames` is set, else 1 fps)."""
    window = clip_frame_range(total_frames, fps, start_s, end_s)
    if len(window) == 0:
        raise MediaError(f"the clip bounds start={start_s} end={end_s} select no frames "
                         f"(the video has {total_frames} frames at {fps:g} fps)")
    if num_frames is None:
        positions = one_per_second_positions(len(window), fps)
    else:
        positions = uniform_segment_midpoints(len(window), num_frames)
    return [window[p] for p in positions]


def audio_clip_slices(num_samples: int, sample_rate: int = AUDIO_SAMPLE_RATE) -> list[tuple[int, int]]:
    """Sample slices of pytorchvideo's `ConstantClipsPerVideoSampler(2, 8)` as upstream uses it for a video's audio.

    The duration is a float (`len/16000`); the clip start is k·max(D−2, 0)/8 as an exact `Fraction`
    (pytorchvideo 0.1.5 divides by the clip count, so the last clip starts at 7/8·(D−2), not at D−2);
    sample bounds are `int()` of the exact value. Slices may run past the end (Python slicing shortens them).
    """
    duration = num_samples / sample_rate
    clip = Fraction(AUDIO_CLIP_SECONDS)
    step = Fraction(Fraction(max(duration - AUDIO_CLIP_SECONDS, 0)), AUDIO_CLIPS_PER_VIDEO)
    slices = []
    for k in range(AUDIO_CLIPS_PER_VIDEO):
        start = step * k
        slices.append((int(start * sample_rate), int((start + clip) * sample_rate)))
    return slices
