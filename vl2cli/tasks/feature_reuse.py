"""Encoded media kept between model calls, so a file asked several questions (or chatted about) is
encoded once: whether a run keeps any, and the key a file's encoded media is kept under."""
from __future__ import annotations

from ..model.feature_cache import FeatureCache
from ..output.record import Request
from .work_item import WorkItem

#: Files whose encoded media a run with several questions keeps: a file's questions are adjacent in the
#: stream, but may straddle two batches.
FEATURE_CACHE_FILES = 2


class FeatureReuse:
    """A run's feature cache (None: nothing kept) and the keys of its items' encoded media."""

    def __init__(self, request: Request, feature_cache: FeatureCache | None = None) -> None:
        self.request = request
        #: encoded media kept between model calls: set when a file is asked several questions (and by
        #: `vl2 chat`), so each file is encoded once; None: nothing kept
        self.feature_cache = feature_cache

    def keep_for_questions(self) -> None:
        """A file is asked several questions: keep its encoded media from the first to the last."""
        if self.feature_cache is None:
            self.feature_cache = FeatureCache(max_entries=FEATURE_CACHE_FILES)

    def feature_key(self, item: WorkItem) -> tuple | None:
        """What identifies a file's encoded media: its stamp, the model, frames and modality."""
        if self.feature_cache is None or item.stamp is None:
            return None
        request = item.request or self.request
        segment = (item.segment["start_s"], item.segment["end_s"]) if item.segment is not None else None
        return (item.stamp, segment, request.model_id, request.revision, request.frames, item.modality)


__all__ = ["FEATURE_CACHE_FILES", "FeatureReuse"]
