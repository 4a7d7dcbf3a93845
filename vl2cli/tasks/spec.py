"""What to ask about every file and how to run it: plain data, importable without torch."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Vl2Error
from ..output.record import Sampling, TaskName
from ..settings import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOP_K, DEFAULT_TOP_P
from .segmenting import Segmenting


def sampling_from(temperature: float | None = None, top_p: float | None = None,
                  seed: int | None = None) -> Sampling | None:
    """Sampling from the user's knobs: None (greedy, upstream's default) unless `temperature` > 0;
    `top_p` defaults to upstream's 0.9. Knobs given without a temperature would do nothing: an error."""
    if not temperature:
        if top_p is not None or seed is not None:
            raise Vl2Error("top_p and seed apply only when sampling: give a temperature above 0 too")
        return None
    return Sampling(temperature=float(temperature), top_p=DEFAULT_TOP_P if top_p is None else float(top_p), seed=seed)


@dataclass(frozen=True)
class TaskSpec:
    """What to ask about every file."""

    task: TaskName
    prompt: str | None = None  # caption prompt (None: default by modality) or the ask question
    labels: tuple[str, ...] | None = None
    top_k: int = DEFAULT_TOP_K
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    #: ask: several questions, each file decoded and encoded once for all of them (one record each)
    questions: tuple[str, ...] = ()
    #: caption/ask: sample instead of greedy decoding (None: greedy, upstream's default)
    sampling: Sampling | None = None

    def __post_init__(self) -> None:
        if self.task == "ask" and not all((q or "").strip() for q in self.prompts):
            raise Vl2Error("ask needs a question")
        if self.questions and self.task != "ask":
            raise Vl2Error(f"{self.task} takes no questions")
        if self.sampling is not None and self.task == "classify":
            raise Vl2Error("classify scores labels; sampling does not apply")
        if self.task == "classify" and not self.labels:
            raise Vl2Error("classify needs at least one label (the labels setting: \"a,b,c\" or @labels.txt)")


    @property
    def prompts(self) -> tuple[str | None, ...]:
        """The prompt of each request the task makes: its questions, else its one prompt."""
        return self.questions if self.questions else (self.prompt,)


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
    #: told the files of each batch as it goes to the model (a progress bar names what is being worked on);
    #: local to this process (not sent to Ray actors)
    on_batch: Callable[[Sequence[Path]], None] | None = field(default=None, compare=False)
