"""The library API: load a model once, then caption, ask or classify files and folders.

    import vl2cli as vl2
    model = vl2.load_model("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV")
    for record in vl2.caption(model, "videos/"):
        print(record["path"], record["output"])

Every function returns one record (a dict, see docs/output-schema.md) per file, in a stable order;
a file that cannot be used gets a record with `error` set instead of raising. The CLI is a thin layer
over these functions plus output, resume and locking.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .discover import MEDIA_KINDS, discover_media
from .settings import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODEL, DEFAULT_TOP_K

if TYPE_CHECKING:
    from .model.videollama2 import VideoLlama2
    from .tasks.spec import TaskSpec

PathsArg = str | Path | Sequence[str | Path]
log = logging.getLogger(__name__)


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    frames: int | None = None,
    encoder_backend: str = "auto",
    device_map: str | dict | None = None,
    export_dir: str | None = None,
    engine_dir: str | None = None,
) -> "VideoLlama2":
    """Load a checkpoint (hub id through the HF cache, or a local folder); `frames` overrides num_frames,
    `device_map` (e.g. "auto") spreads the LLM over several GPUs, `export_dir`/`engine_dir` say where
    `vl2 export` wrote encoders for `encoder_backend` to find."""
    from .model.videollama2 import VideoLlama2
    from .runtime.selection import attach_encoder_backend, check_backend_name

    check_backend_name(encoder_backend)
    # the model core always loads with torch encoders; the backend is composed on top of it
    loaded = VideoLlama2.from_pretrained(model, revision=revision, device=device, dtype=dtype, num_frames=frames,
                                         device_map=device_map)
    attach_encoder_backend(loaded, encoder_backend, export_dir=export_dir, engine_dir=engine_dir)
    return loaded


def _as_list(paths: PathsArg) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


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
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    kinds: Sequence[str] = MEDIA_KINDS,
) -> Iterator[dict[str, Any]]:
    """Stream records as batches finish (files and folders expanded as the CLI does)."""
    from .tasks.pipeline import run_task
    from .tasks.spec import RunOptions

    found = discover_media(_as_list(paths), recursive=recursive, kinds=kinds, include=include, exclude=exclude)
    for warning in found.warnings:  # a library reports walk problems through logging, not stderr
        log.warning(warning.message)
    options = RunOptions(modality=modality, batch_size=batch_size, workers=workers, decode_timeout=decode_timeout,
                         video_backend=video_backend)
    for outcome in run_task(model, found.files, task, options):
        if outcome.record is not None:
            yield outcome.record


def caption(model: "VideoLlama2", paths: PathsArg, *, prompt: str | None = None,
            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **run: Any) -> list[dict[str, Any]]:
    """Describe each file ("Describe the video/image/audio in detail." unless `prompt` is given)."""
    from .tasks.spec import TaskSpec

    return list(iter_records(model, paths, TaskSpec("caption", prompt=prompt, max_new_tokens=max_new_tokens), **run))


def ask(model: "VideoLlama2", paths: PathsArg, question: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **run: Any) -> list[dict[str, Any]]:
    """Answer the same question about each file."""
    from .tasks.spec import TaskSpec

    return list(iter_records(model, paths, TaskSpec("ask", prompt=question, max_new_tokens=max_new_tokens), **run))


def classify(model: "VideoLlama2", paths: PathsArg, labels: str | Sequence[str], *, top_k: int = DEFAULT_TOP_K,
             **run: Any) -> list[dict[str, Any]]:
    """Score every label per file by the model's log-likelihood; `output` is the best label.

    `labels` is a list, a "a,b,c" string, or "@labels.txt" (one per line).
    """
    from .tasks.spec import TaskSpec
    from .tasks.prompts import parse_labels

    task = TaskSpec("classify", labels=tuple(parse_labels(labels)), top_k=top_k)
    return list(iter_records(model, paths, task, **run))
