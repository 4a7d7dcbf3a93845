"""What a record says about one stream of a file (a cut-off video, an audio track that ends early).

Its own module so both loaders (`media.loader` and the v1 one, `media.videollama_v1`) use it without
importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MediaNote:
    """Something about one stream of a file that its record should say; `stream` is "video" or "audio"."""

    stream: str
    text: str
