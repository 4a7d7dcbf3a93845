"""A work item, answered or failed, as its `Record`: the one place the pipeline and `vl2 chat` build records."""
from __future__ import annotations

from typing import Any

from .. import __version__
from ..output.record import Record, Request, decoding_facts, media_facts
from .runtime_facts import runtime_facts
from .work_item import WorkItem

TIMING_DECIMALS = 2


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, TIMING_DECIMALS)


class RecordBuilder:
    """Builds each item's record against the run's request (or the item's own, with several questions)."""

    def __init__(self, request: Request, *, model: Any = None, video_backend: str | None = None) -> None:
        self.request = request
        self.model, self.video_backend = model, video_backend
        self._runtime: dict[str, Any] | None = None

    def runtime(self) -> dict[str, Any] | None:
        """The records' `runtime` object, once the model is loaded (a lazy model that no file needed
        stays unloaded: its records were made without it)."""
        if self._runtime is None and self.model is not None and getattr(self.model, "loaded", True):
            self._runtime = runtime_facts(self.model, self.video_backend)
        return self._runtime

    def record(self, item: WorkItem) -> Record:
        loaded = item.loaded
        decode_ms = sum(loaded.timings_ms.values()) if loaded is not None else None
        total = (decode_ms or 0.0) + (item.model_ms or 0.0) if decode_ms is not None else None
        failed = item.error is not None
        return Record(
            item.request or self.request, path=str(item.path), stamp=item.stamp, vl2_version=__version__,
            media=media_facts(loaded.info) if loaded is not None else None,
            instruction=item.instruction, modality=item.modality,
            audio_missing=bool(loaded is not None and loaded.audio_missing and item.modality == "av"),
            notes=tuple(item.notes),
            output=None if failed else item.output,
            label_scores=None if failed else item.label_scores,
            top_k=None if failed else item.top_k,
            timings_ms={"decode": _round_ms(decode_ms), "model": _round_ms(item.model_ms), "total": _round_ms(total),
                        "batch_size": item.batch_size},
            error=item.error,
            segment=item.segment,
            decoding=decoding_facts(loaded, item.modality) if not failed else None,
            generation=None if failed else item.generation,
            runtime=self.runtime(),
        )


__all__ = ["RecordBuilder"]
