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

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .discover import MEDIA_KINDS, WalkWarning, iter_media
from .errors import Vl2Error
from .settings import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODEL, DEFAULT_TOP_K

if TYPE_CHECKING:
    from .model.videollama2 import VideoLlama2
    from .output.record import Request, ResumeKey
    from .tasks.chat import ChatSession
    from .tasks.plan import FileOutcome, KnownSegments, PlannedFile
    from .tasks.spec import RunOptions, TaskSpec

PathsArg = str | Path | Sequence[str | Path]
#: The model half of a run: (model, planned files, task, options, request) -> one outcome per file.
Runner = Callable[[Any, Iterator["PlannedFile"], "TaskSpec", "RunOptions", "Request"], Iterator["FileOutcome"]]
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
    """Load a checkpoint (hub id through the HF cache, or a local folder); a Video-LLaMA (v1) hub id, folder
    or upstream eval YAML loads that family (`vl2cli.model.families`). `frames` overrides num_frames,
    `device_map` (e.g. "auto") spreads the LLM over several GPUs, `export_dir`/`engine_dir` say where
    `vl2 export` wrote encoders for `encoder_backend` to find."""
    from .model.families import family_of, model_class
    from .model.videollama2 import VideoLlama2
    from .runtime.selection import attach_encoder_backend, check_backend_name

    check_backend_name(encoder_backend)
    family = family_of(model)
    if family != "videollama2":  # Video-LLaMA (v1): torch encoders only (no export path for its encoders)
        if encoder_backend not in ("auto", "torch"):
            raise Vl2Error(f"encoder_backend {encoder_backend!r}: {model} is a Video-LLaMA (v1) model; "
                           "its encoders run in torch only.")
        return model_class(family).from_pretrained(model, revision=revision, device=device, dtype=dtype,
                                                   num_frames=frames)
    # the model core always loads with torch encoders; the backend is composed on top of it
    loaded = VideoLlama2.from_pretrained(model, revision=revision, device=device, dtype=dtype, num_frames=frames,
                                         device_map=device_map)
    attach_encoder_backend(loaded, encoder_backend, export_dir=export_dir, engine_dir=engine_dir)
    return loaded


def convert_model(model: str, out: str | Path, *, revision: str | None = None) -> list[Path]:
    """Write a safetensors copy of a Video-LLaMA (v1) model (folder, hub id or eval YAML) into the new
    folder `out`, which then loads with `load_model(out)` without unpickling anything."""
    from .model.families import family_of
    from .model.videollama.convert import convert_v1

    if family_of(model) != "videollama":
        raise Vl2Error(f"{model}: not a Video-LLaMA (v1) model; VideoLLaMA 2 checkpoints are safetensors already.")
    return convert_v1(model, Path(out), revision=revision)


def _as_list(paths: PathsArg) -> list[str | Path]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def _log_walk_warning(warning: "WalkWarning") -> None:
    log.warning(warning.message)  # a library reports walk problems through logging, not stderr


def _counted(files: Iterator[Path], on_end: Callable[[int], None]) -> Iterator[Path]:
    count = 0
    for file in files:
        count += 1
        yield file
    on_end(count)


def iter_outcomes(
    model: Any,
    paths: PathsArg,
    task: "TaskSpec",
    options: "RunOptions | None" = None,
    *,
    is_done: "Callable[[ResumeKey], bool] | None" = None,
    known_segments: "KnownSegments | None" = None,
    on_warning: "Callable[[WalkWarning], None] | None" = None,
    on_walk_end: Callable[[int], None] | None = None,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    kinds: Sequence[str] = MEDIA_KINDS,
    keep: Callable[[Path], bool] | None = None,
    runner: "Runner | None" = None,
    listed: Iterable[str | Path] | None = None,
) -> Iterator["FileOutcome"]:
    """The one run path (the CLI wraps it): one outcome per file (and question), streamed as batches finish.

    Folders are walked lazily (the first file is decoded before the walk of a large archive ends);
    `is_done(key)` marks files an earlier run finished (skipped outcomes, `record is None`); walk
    problems go to `on_warning` (default: this module's logger); `on_walk_end(n)` hears how many
    files the walk found once it has ended (e.g. a progress bar's total). `keep(path)` drops the
    files it refuses before anything else (a Slurm shard keeps its own, `vl2cli.runners.shards`);
    `runner` does the model half for the files that need work (default: this process's pipeline,
    `vl2cli.tasks.pipeline.run_planned`; `vl2cli.runners.ray_engine` spreads it over a Ray cluster). `model` is a loaded VideoLlama2 or a
    `LazyModel`: until a file needs the model, nothing here imports torch, so a rerun where every file
    is done returns in the time the walk takes. With `options.segmenting`, each segment of a long file
    is an outcome of its own; `known_segments(file_key, by)` lists a file's segments from earlier
    records (`ResumeIndex.known_segments`) so a finished file is not cut again.
    """
    from .tasks.spec import RunOptions

    options = options or RunOptions()  # checked now, at the call: a missing input or model raises here
    planned, requests = plan_run(model, paths, task, options, is_done=is_done, known_segments=known_segments,
                                 on_warning=on_warning, on_walk_end=on_walk_end, recursive=recursive,
                                 include=include, exclude=exclude, kinds=kinds, listed=listed, keep=keep)
    if runner is not None and len(requests) > 1:
        raise Vl2Error("several questions per file run on the local engine only, not on Ray yet")
    return _outcomes(model, planned, task, options, requests[0], runner)


def plan_run(
    model: Any,
    paths: PathsArg,
    task: "TaskSpec",
    options: "RunOptions",
    *,
    is_done: "Callable[[ResumeKey], bool] | None" = None,
    known_segments: "KnownSegments | None" = None,
    on_warning: "Callable[[WalkWarning], None] | None" = None,
    on_walk_end: Callable[[int], None] | None = None,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    kinds: Sequence[str] = MEDIA_KINDS,
    listed: Iterable[str | Path] | None = None,
    keep: Callable[[Path], bool] | None = None,
) -> tuple[Iterator["PlannedFile"], tuple["Request", ...]]:
    """The front of `iter_outcomes` (walk, stat, resume check; torch-free): the planned files and the
    run's requests (one per question). `--dry-run` prints this without running it."""
    from .tasks.plan import build_requests, plan_files

    warn = on_warning or _log_walk_warning
    files = iter_media(_as_list(paths), recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                       on_warning=warn)
    if listed is not None:
        from .input_lists import each_once, iter_listed

        files = each_once(itertools.chain(files, iter_listed(listed, recursive=recursive, kinds=kinds, include=include,
                                                         exclude=exclude, on_warning=warn)))
    if keep is not None:
        files = (file for file in files if keep(file))
    if on_walk_end is not None:
        files = _counted(files, on_walk_end)
    requests = build_requests(model, task, options)
    planned = plan_files(files, requests, is_done, segmenting=options.segmenting, known_segments=known_segments)
    return planned, requests


def _outcomes(model: Any, planned: Iterator["PlannedFile"], task: "TaskSpec", options: "RunOptions",
              request: "Request", runner: "Runner | None" = None) -> Iterator["FileOutcome"]:
    for plan in planned:
        if plan.pending:
            if runner is None:
                from .tasks.pipeline import run_planned as runner  # torch: only now that a file needs the model

            yield from runner(model, itertools.chain([plan], planned), task, options, request)
            return
        yield plan.outcome


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
    segment: str | None = None,
    segment_overlap: str | None = None,
    segment_min: str | None = None,
    segment_max: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream records as batches finish (files and folders expanded as the CLI does).

    `segment` ("60s", "1m30s", "scenes", ...) cuts long files into segments, one record each, with
    `segment_overlap` (fixed windows) or `segment_min`/`segment_max` (scenes) as durations.
    """
    from .tasks.segmenting import Segmenting
    from .tasks.spec import RunOptions

    segmenting = (Segmenting.parse(segment, overlap=segment_overlap, min_length=segment_min, max_length=segment_max)
                  if segment else None)
    options = RunOptions(modality=modality, batch_size=batch_size, workers=workers, decode_timeout=decode_timeout,
                         video_backend=video_backend, segmenting=segmenting)
    for outcome in iter_outcomes(model, paths, task, options, recursive=recursive, include=include,
                                 exclude=exclude, kinds=kinds):
        if outcome.record is not None:
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
