"""The frames a record's model saw, re-sampled from the file with vl2's own sampling, as one JPEG strip.

The record does not store pixels; the same rule that chose the frames (upstream's uniform sampling
inside the segment's `s`/`e` bounds, `frames` of them) chooses them again from the file, if it is
still there. When it is not, or it changed, or it has no pictures, the row says so instead.
"""
from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..constants import FRAMES_LIMIT
from ..errors import (CorruptMediaError, EmptyFileError, NoVideoStreamError, UnreadableFileError,
                      UnsupportedMediaError)

#: Height of one frame in the strip, in pixels (the page shows them at this size or smaller).
FRAME_HEIGHT = 72
#: Widest a frame is drawn, in heights (a 4097x3 video would otherwise be 98 000 pixels wide, past JPEG's
#: 65 535); a wider frame is squeezed to this, and the strip stays within JPEG_MAX_WIDTH.
MAX_ASPECT = 4
JPEG_MAX_WIDTH = 65000
_JPEG_QUALITY = 80
#: Segment bounds are capped here before frames are sampled again (a year: past any file's end).
_LATEST_BOUND_S = 365 * 86400.0
#: Error codes for files that never decoded: there is nothing to show, and trying again is wasted time.
_UNREADABLE_CODES = frozenset(cls.code for cls in (EmptyFileError, UnsupportedMediaError, CorruptMediaError,
                                                 UnreadableFileError, NoVideoStreamError))


@dataclass
class Sheet:
    """A contact sheet as a data URI (or None), and what the row should say about it."""

    data_uri: str | None
    note: str | None = None
    frame_indices: list[int] | None = None


def _strip(frames: list[np.ndarray], height: int) -> str:
    scaled = []
    widest = max(1, min(MAX_ASPECT * height, JPEG_MAX_WIDTH // max(1, len(frames)) - 2))
    for frame in frames:
        image = Image.fromarray(frame)
        width = max(1, min(widest, round(image.width * height / max(1, image.height))))
        scaled.append(image.resize((width, height), Image.BILINEAR))
    strip = Image.new("RGB", (sum(im.width for im in scaled) + 2 * (len(scaled) - 1), height), (255, 255, 255))
    x = 0
    for image in scaled:
        strip.paste(image, (x, 0))
        x += image.width + 2
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _changed(record: dict[str, Any], path: str) -> bool:
    stamp = record.get("file")
    if not stamp:
        return False
    stat = os.stat(path)
    return stat.st_size != stamp.get("size_bytes") or stat.st_mtime_ns != stamp.get("mtime_ns")


def contact_sheet(record: dict[str, Any], *, height: int = FRAME_HEIGHT, video_backend: str = "decord") -> Sheet:
    """The strip of frames the model saw for this record, or a note saying why there is none."""
    path = record.get("path")
    if not isinstance(path, str) or not os.path.isfile(path):
        return Sheet(None, "the file is no longer at this path: no frames to show")
    error = record.get("error") or {}
    if error.get("code") in _UNREADABLE_CODES:
        return Sheet(None, "the file could not be decoded: no frames")
    media = record.get("media") or {}
    if record.get("modality") == "audio" or media.get("kind") == "audio":
        return Sheet(None, "sound only: the model saw no frames")
    note = "the file changed since this record was written; frames from the file as it is now" \
        if _changed(record, path) else None
    try:
        if media.get("kind") == "image":
            with Image.open(path) as image:
                return Sheet(_strip([np.asarray(image.convert("RGB"))], height), note, [0])
        from ..media.sampling import sample_frame_indices
        from ..media.video import decode_video_frames

        segment = record.get("segment") or {}
        # bounds past any file's end (a record may say 1e308) are the file's end for sampling
        start, end = (None if bound is None else min(float(bound), _LATEST_BOUND_S)
                      for bound in (segment.get("start_s"), segment.get("end_s")))
        frames = min(int(record.get("frames") or 8), FRAMES_LIMIT)  # a record's frames is not bounded by the schema
        decoded = decode_video_frames(path, lambda total, fps: sample_frame_indices(total, fps, frames, start, end),
                                      video_backend)  # type: ignore[arg-type]
        return Sheet(_strip(list(decoded.frames), height), note, list(decoded.indices))
    except Exception as exc:  # noqa: BLE001 - a report row must not end the report
        return Sheet(None, f"frames could not be read again ({type(exc).__name__}: {exc})")
