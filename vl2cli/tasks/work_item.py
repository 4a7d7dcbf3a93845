"""`WorkItem`: one file (or segment, or question about it) on its way through a batch.

Plain data, shared by the pipeline's parts: the preparer fills in the media and instruction, the
model call the answer, the record builder reads it all back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..media.loader import LoadedMedia
from ..output.record import FileStamp, Request


@dataclass
class WorkItem:
    """A file on its way through a batch."""

    path: Path
    stamp: FileStamp | None
    segment: dict[str, Any] | None = None
    loaded: LoadedMedia | None = None
    modality: str | None = None
    instruction: str | None = None
    error: dict[str, str] | None = None
    output: str | None = None
    label_scores: list[dict[str, Any]] | None = None
    top_k: list[str] | None = None
    model_ms: float | None = None
    batch_size: int | None = None
    #: the record's `generation` object, once the model answered
    generation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: this item's request when the run makes several per file (ask with several questions)
    request: Request | None = None

    @property
    def ready(self) -> bool:
        return self.modality is not None and self.error is None


__all__ = ["WorkItem"]
