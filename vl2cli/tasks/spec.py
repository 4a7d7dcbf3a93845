"""What to ask about every file and how to run it: plain data, importable without torch."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import Vl2Error
from ..output.record import TaskName
from ..settings import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOP_K
from .segmenting import Segmenting


@dataclass(frozen=True)
class TaskSpec:
    """What to ask about every file."""

    task: TaskName
    prompt: str | None = None  # caption prompt (None: default by modality) or the ask question
    labels: tuple[str, ...] | None = None
    top_k: int = DEFAULT_TOP_K
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self) -> None:
        if self.task == "ask" and not (self.prompt or "").strip():
            raise Vl2Error("ask needs a question")
        if self.task == "classify" and not self.labels:
            raise Vl2Error("classify needs at least one label (--labels \"a,b,c\" or --labels @labels.txt)")


@dataclass(frozen=True)
class RunOptions:
    """How to run: modality choice, batching, decoding. None = a default for the model's device."""

    modality: str = "auto"
    batch_size: int | None = None
    workers: int | None = None
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT_S
    video_backend: str = "decord"
    #: cut long files into segments, one record each (None: one record per file)
    segmenting: Segmenting | None = None
