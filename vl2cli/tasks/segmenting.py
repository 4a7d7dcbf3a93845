"""`--segment`: how a run cuts long files into timed segments, each then captioned like a clip.

`Segmenting` is plain data (torch-free, like the rest of planning); `cut` probes the file (and, for
scenes, reads it once through PySceneDetect) to list its segments. Images are never cut; audio files
have no scenes, so `scenes` cuts them into windows of the maximum length.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import MediaError, Vl2Error
from ..media.segments import MIN_TAIL_S, Segment, fixed_windows, format_seconds, parse_duration, scene_windows

SCENES = "scenes"
DEFAULT_SCENE_MIN = "2s"
DEFAULT_SCENE_MAX = "60s"
#: Shortest segment (and step between fixed windows): shorter ones would be merged away as tails (a
#: `--segment 500ms` run got one segment for the whole file) or hold no frame at all.
MIN_SEGMENT_S = MIN_TAIL_S
#: Longest segment length or scene bound accepted: a day.
MAX_SEGMENT_S = 86400.0


def _bounded(name: str, text: str, seconds: float) -> float:
    if not MIN_SEGMENT_S <= seconds <= MAX_SEGMENT_S:
        raise Vl2Error(f"{name}: {text!r} is {seconds:g} s; a segment must be at least {MIN_SEGMENT_S:g} s and at "
                       f"most {MAX_SEGMENT_S:g} s")
    return seconds


@dataclass(frozen=True)
class Segmenting:
    """Fixed windows (`length_s` every `length_s - overlap_s`) or scenes (kept between `min_s` and `max_s`)."""

    mode: Literal["fixed", "scenes"]
    length_s: float = 0.0
    overlap_s: float = 0.0
    min_s: float = 2.0
    max_s: float = 60.0

    @classmethod
    def parse(cls, segment: str, *, overlap: str | None = None, min_length: str | None = None,
              max_length: str | None = None) -> "Segmenting":
        """From the settings' text: `segment` "30s" / "1m" / "90" / "scenes"; the others durations."""
        overlap_s = parse_duration(overlap) if overlap not in (None, "", "0") else 0.0
        min_s = parse_duration(min_length or DEFAULT_SCENE_MIN)
        max_s = parse_duration(max_length or DEFAULT_SCENE_MAX)
        if segment.strip().lower() == SCENES:
            _bounded("segment_max", max_length or DEFAULT_SCENE_MAX, max_s)
            if min_s > MAX_SEGMENT_S:
                _bounded("segment_min", min_length or DEFAULT_SCENE_MIN, min_s)
            if min_s > max_s:
                raise Vl2Error(f"segment_min ({min_length}) must not be longer than segment_max ({max_length})")
            return cls("scenes", min_s=min_s, max_s=max_s)
        try:
            length_s = parse_duration(segment)
        except Vl2Error as exc:
            raise Vl2Error(f"segment: {exc}; or use \"scenes\"") from None
        _bounded("segment", segment, length_s)
        if overlap_s >= length_s:
            raise Vl2Error(f"segment_overlap ({overlap}) must be shorter than the segment ({segment})")
        if length_s - overlap_s < MIN_SEGMENT_S:
            raise Vl2Error(f"segment_overlap ({overlap}): windows would start every {length_s - overlap_s:g} s; "
                           f"leave at least {MIN_SEGMENT_S:g} s between window starts")
        return cls("fixed", length_s=length_s, overlap_s=overlap_s)

    @property
    def by(self) -> str:
        """How files are cut, as records say it (and as resume tells runs apart): "60s", "60s overlap
        10s", "scenes 2s-60s"."""
        if self.mode == "scenes":
            return f"{SCENES} {format_seconds(self.min_s)}-{format_seconds(self.max_s)}"
        overlap = f" overlap {format_seconds(self.overlap_s)}" if self.overlap_s else ""
        return f"{format_seconds(self.length_s)}{overlap}"

    def record_form(self, segment: Segment) -> dict[str, Any]:
        """The record's `segment` object."""
        return {**segment.to_dict(), "by": self.by}

    def cut(self, path: str) -> list[Segment] | None:
        """The file's segments; None for an image (captioned whole). Raises MediaError (one error record
        for the file) when it cannot be probed or read."""
        from ..media.probe import probe_media  # media pulls in PyAV (and torch): only once a file is cut

        info = probe_media(path)
        if info.kind == "image":
            return None
        if self.mode == "scenes" and info.has_video:
            from ..media.scenes import detect_scene_cuts

            scenes = detect_scene_cuts(path)
            duration = _known_duration(path, scenes.duration_s or info.duration_s)
            return scene_windows(scenes.cuts_s, duration, self.min_s, self.max_s)
        duration = _known_duration(path, info.duration_s)
        length = self.length_s if self.mode == "fixed" else self.max_s
        return fixed_windows(duration, length, self.overlap_s)


def _known_duration(path: str, duration_s: float | None) -> float:
    if not duration_s or duration_s <= 0:
        raise MediaError(f"{path}: the file's duration is unknown, so it cannot be cut into segments", path=path)
    return duration_s
