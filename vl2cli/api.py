"""The library API: load a model once, then caption, ask or classify files and folders.

    import vl2cli as vl2
    model = vl2.load_model("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV")
    for record in vl2.caption(model, "videos/"):
        print(record["path"], record["output"])

Every function returns one record (a dict, see docs/output-schema.md) per file, in a stable order;
a file that cannot be used gets a record with `error` set instead of raising. Every run goes through
`vl2cli.run.BatchRun`, which the CLI's command bodies (`vl2cli.commands`) wrap with their UI.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .discover import WalkOptions
from .loading import convert_model, load_model
from .settings import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_NEW_TOKENS, DEFAULT_TOP_K, Settings
from .tasks.outcomes import PathsArg, as_path_list, iter_outcomes, plan_run

if TYPE_CHECKING:
    from .model.videollama2 import VideoLlama2
    from .tasks.chat import ChatSession
    from .tasks.plan import Runner
    from .tasks.spec import TaskSpec

#: The walk's defaults, which the keywords below take: plain keywords for callers, one declaration.
_WALK = WalkOptions()

__all__ = ["WalkOptions", "ask", "caption", "chat", "classify", "convert_model", "iter_outcomes", "iter_records",
           "load_model", "plan_run"]


def iter_records(
    model: "VideoLlama2",
    paths: PathsArg,
    task: "TaskSpec",
    *,
    modality: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    decode_timeout: float = DEFAULT_DECODE_TIMEOUT_S,
    video_backend: str = "decord",
    recursive: bool = _WALK.recursive,
    include: Sequence[str] = _WALK.include,
    exclude: Sequence[str] = _WALK.exclude,
    kinds: Sequence[str] = _WALK.kinds,
    segment: str | None = None,
    segment_overlap: str | None = None,
    segment_min: str | None = None,
    segment_max: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records as batches finish (files and folders expanded as the CLI does).

    `recursive`, `include`, `exclude` and `kinds` say which files of a folder are picked up (see
    `vl2cli.discover.WalkOptions`, whose defaults these are). `segment` ("60s", "1m30s", "scenes", ...) cuts long files into segments, one record each, with
    `segment_overlap` (fixed windows) or `segment_min`/`segment_max` (scenes) as durations.
    """
    from .run import BatchRun
    from .tasks.plan import SkippedFiles
    from .tasks.segmenting import Segmenting
    from .tasks.spec import RunOptions

    segmenting = (Segmenting.parse(segment, overlap=segment_overlap, min_length=segment_min, max_length=segment_max)
                  if segment else None)
    options = RunOptions(modality=modality, batch_size=batch_size, workers=workers, decode_timeout=decode_timeout,
                         video_backend=video_backend, segmenting=segmenting)
    settings = Settings(recursive=recursive, include=list(include), exclude=list(exclude), kinds=list(kinds))
    with BatchRun(task, as_path_list(paths), settings, model=model, options=options, write_jsonl=False) as run:
        for outcome in run.outcomes():
            if not isinstance(outcome, SkippedFiles) and outcome.record is not None:
                yield outcome.record


def caption(model: "VideoLlama2", paths: PathsArg, *, prompt: str | None = None,
            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float | None = None, top_p: float | None = None,
            seed: int | None = None, **run: Any) -> list[dict[str, Any]]:
    """Describe each file ("Describe the video/image/audio in detail." unless `prompt` is given).
    Greedy unless `temperature` > 0 (then `top_p`, default 0.9, and `seed` for reproducible samples)."""
    from .tasks.spec import TaskSpec, sampling_from

    task = TaskSpec("caption", prompt=prompt, max_new_tokens=max_new_tokens, sampling=sampling_from(temperature, top_p, seed))
    return list(iter_records(model, paths, task, **run))


def ask(model: "VideoLlama2", paths: PathsArg, question: str | Sequence[str], *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, temperature: float | None = None, top_p: float | None = None,
        seed: int | None = None, **run: Any) -> list[dict[str, Any]]:
    """Answer the same question about each file; a list of questions gives one record per file and
    question, each file decoded and encoded once. Sampling as in `caption`."""
    from .tasks.spec import TaskSpec, sampling_from

    several = not isinstance(question, str)
    task = TaskSpec("ask", prompt=None if several else question, questions=tuple(question) if several else (),
                    max_new_tokens=max_new_tokens, sampling=sampling_from(temperature, top_p, seed))
    return list(iter_records(model, paths, task, **run))


def chat(model: "VideoLlama2", paths: Sequence[str | Path], *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
         modality: str = "auto", video_backend: str = "decord", temperature: float | None = None,
         top_p: float | None = None, seed: int | None = None) -> "ChatSession":
    """A session over a few files: `session.ask(question)` returns one record per file; each file is
    decoded and encoded once for the whole session (kept in memory, never on disk)."""
    from .tasks.chat import ChatSession
    from .tasks.spec import RunOptions, sampling_from

    return ChatSession(model, list(paths), options=RunOptions(modality=modality, video_backend=video_backend),
                       max_new_tokens=max_new_tokens, sampling=sampling_from(temperature, top_p, seed))


def classify(model: "VideoLlama2", paths: PathsArg, labels: str | Sequence[str], *, top_k: int = DEFAULT_TOP_K,
             **run: Any) -> list[dict[str, Any]]:
    """Score every label per file by the model's log-likelihood; `output` is the best label.

    `labels` is a list, a "a,b,c" string, or "@labels.txt" (one per line).
    """
    from .tasks.spec import TaskSpec
    from .tasks.prompts import parse_labels

    task = TaskSpec("classify", labels=tuple(parse_labels(labels)), top_k=top_k)
    return list(iter_records(model, paths, task, **run))
