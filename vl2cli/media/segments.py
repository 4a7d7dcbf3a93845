"""Cutting a long file into timed segments, as pure functions of durations and cut times.

VideoLLaMA 2 sees `num_frames` frames of whatever it is given, so a two-hour recording gets one
caption unless it is cut first. A segment is a [start_s, end_s) window in seconds that the decoders
then treat as upstream's `s`/`e` clip bounds (`sampling.clip_frame_range`). Kept free of decoders so
the arithmetic is tested without files.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vl2cli.errors import Vl2Error

#: Segment bounds are kept (and recorded) in whole milliseconds.
BOUND_DECIMALS = 3
_MS_PER_S = 1000
#: A fixed-window tail shorter than this is merged into the window before it (a 0.04 s last window
#: would hold no frame at all).
MIN_TAIL_S = 1.0
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Segment:
    """One window of a file: `index` of `count`, [start_s, end_s) in seconds (whole milliseconds)."""

    index: int
    start_s: float
    end_s: float
    count: int

    def to_dict(self) -> dict[str, float | int]:
        return {"index": self.index, "start_s": self.start_s, "end_s": self.end_s, "count": self.count}


def ceil_ms(seconds: float) -> float:
    """Round a bound up to whole milliseconds.

    Up, not to nearest: a cut at frame c lies at c/fps, and upstream's window starts at
    `int(s*fps) - 1`; a bound rounded down by a hair would move the window one more frame back.
    """
    return math.ceil(seconds * _MS_PER_S - 1e-6) / _MS_PER_S


def parse_duration(text: str) -> float:
    """Seconds from "30s", "2m", "1m30s", "1h", "500ms", "90", "1:30" or "1:02:03.5"."""
    value = text.strip().lower().replace(" ", "")
    if not value:
        raise Vl2Error("a segment length must not be empty")
    try:
        seconds = float(value)
    except ValueError:
        clock = _CLOCK.fullmatch(value)
        if clock is not None:
            hours, minutes, secs = clock.groups()
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            parts = _DURATION_PART.findall(value)
            if not parts or "".join(n + u for n, u in parts) != value:
                raise Vl2Error(f"{text!r} is not a duration (examples: 30s, 2m, 1m30s, 90, 1:30)") from None
            seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise Vl2Error(f"{text!r}: a duration must be positive")
    return seconds


def format_seconds(seconds: float) -> str:
    """Shortest plain form of a duration for a segmenting label: 60 -> "60s", 2.5 -> "2.5s"."""
    return f"{seconds:g}s"


def _numbered(bounds: Sequence[tuple[float, float]]) -> list[Segment]:
    return [Segment(i, start, end, len(bounds)) for i, (start, end) in enumerate(bounds)]


def fixed_windows(duration_s: float, length_s: float, overlap_s: float = 0.0) -> list[Segment]:
    """Windows of `length_s` every `length_s - overlap_s` seconds, the last one ending at the file's end.

    A tail shorter than MIN_TAIL_S is merged into the window before it; a file shorter than one
    window is one segment.
    """
    if length_s <= 0:
        raise Vl2Error("a segment length must be positive")
    if overlap_s < 0 or overlap_s >= length_s:
        raise Vl2Error(f"the segment overlap ({overlap_s:g} s) must be at least 0 and less than the "
                       f"segment length ({length_s:g} s)")
    end = ceil_ms(duration_s)
    if end <= 0:
        raise Vl2Error("the file has no duration to cut into segments")
    step = length_s - overlap_s
    bounds: list[tuple[float, float]] = []
    k = 0
    while True:
        start = ceil_ms(k * step)
        stop = min(ceil_ms(k * step + length_s), end)
        if bounds and stop - start < MIN_TAIL_S:  # a sliver at the end joins the window before it
            bounds[-1] = (bounds[-1][0], end)
            break
        bounds.append((start, stop))
        if stop >= end:
            break
        k += 1
    return _numbered(bounds)


def scene_windows(cuts_s: Sequence[float], duration_s: float, min_s: float, max_s: float) -> list[Segment]:
    """Segments between scene cuts, none shorter than `min_s` (merged into a neighbour) nor longer
    than `max_s` (split into equal parts).

    `cuts_s`: the times (seconds) where a new scene starts, in any order; cuts at or before 0 or at or
    after the end are ignored. A scene shorter than `min_s` joins the scene before it (the first one
    joins the next), so a flurry of cuts becomes one segment.
    """
    if min_s <= 0 or max_s <= 0 or min_s > max_s:
        raise Vl2Error(f"scene segments need 0 < min ({min_s:g} s) <= max ({max_s:g} s)")
    end = ceil_ms(duration_s)
    if end <= 0:
        raise Vl2Error("the file has no duration to cut into segments")
    points = sorted({ceil_ms(c) for c in cuts_s if 0 < ceil_ms(c) < end})
    edges = [0.0, *points, end]
    scenes = [[edges[i], edges[i + 1]] for i in range(len(edges) - 1)]
    merged: list[list[float]] = []
    for scene in scenes:
        if merged and scene[1] - scene[0] < min_s:
            merged[-1][1] = scene[1]
        elif merged and merged[-1][1] - merged[-1][0] < min_s:  # a short first scene joins this one
            merged[-1][1] = scene[1]
        else:
            merged.append(scene)
    bounds: list[tuple[float, float]] = []
    for start, stop in merged:
        parts = max(1, math.ceil((stop - start) / max_s - 1e-9))
        width = (stop - start) / parts
        cut_points = [start] + [ceil_ms(start + width * p) for p in range(1, parts)] + [stop]
        bounds.extend((cut_points[p], cut_points[p + 1]) for p in range(parts))
    return _numbered(bounds)
