"""The run loop: files -> skip done -> decode workers -> batches -> model -> one record per file.

Decoding runs in worker processes (DecodePool) with at most a few batches in flight, so memory stays
flat however many files there are. Each batch goes through the encoders and the LLM together; a batch
that fails is retried one file at a time so one bad file cannot take its neighbours down. Every file
ends as exactly one record, an error being a record too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from .. import __version__
from ..errors import MediaError
from ..media.image import ImageProcessorSpec
from ..media.loader import LoadedMedia, MediaSpec
from ..media.workers import DecodePool
from ..model.inputs import MultimodalInput
from ..output.record import FileStamp, Request, ResumeKey, build_record, media_facts, resume_key
from ..settings import default_batch_size, default_workers
from .modality import ModelTowers, check_requested_modality, choose_modality, decode_wants_audio, to_model_input
from .prompts import caption_instruction, classify_instruction
from .spec import RunOptions, TaskSpec

MS_PER_S = 1000.0
TIMING_DECIMALS = 2
#: Batches decoded ahead of the model: enough to keep it busy, few enough to bound memory.
BATCHES_IN_FLIGHT = 2
UNREADABLE_FILE_CODE = "unreadable_file"
MODEL_ERROR_CODE = "model_error"


@dataclass
class FileOutcome:
    """One input file's fate: its record, or `record is None` when it was skipped as already done."""

    path: Path
    record: dict[str, Any] | None

    @property
    def skipped(self) -> bool:
        return self.record is None


@dataclass
class _Item:
    """A file on its way through a batch."""

    path: Path
    stamp: FileStamp
    loaded: LoadedMedia | None = None
    modality: str | None = None
    input: MultimodalInput | None = None
    instruction: str | None = None
    error: dict[str, str] | None = None
    output: str | None = None
    label_scores: list[dict[str, Any]] | None = None
    top_k: list[str] | None = None
    model_ms: float | None = None
    batch_size: int | None = None
    notes: list[str] = field(default_factory=list)


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, TIMING_DECIMALS)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


class _Runner:
    """Holds what every file of a run shares; turns decoded files into records."""

    def __init__(self, model: Any, task: TaskSpec, options: RunOptions) -> None:
        self.model, self.task, self.options = model, task, options
        self.towers = ModelTowers(model.config.has_vision, model.config.has_audio)
        check_requested_modality(options.modality, self.towers, model.model_id)
        self.request = Request(task=task.task, prompt=task.prompt, labels=task.labels, model_id=model.model_id,
                               revision=model.revision, frames=model.num_frames, modality=options.modality)

    def media_spec(self) -> MediaSpec:
        config = self.model.image_processor_config
        return MediaSpec(
            num_frames=self.model.num_frames,
            image=ImageProcessorSpec.from_config(config) if config is not None else None,
            want_audio=decode_wants_audio(self.options.modality, self.towers),
            video_backend=self.options.video_backend,  # type: ignore[arg-type]
        )

    def instruction_for(self, modality: str) -> str:
        if self.task.task == "caption":
            return caption_instruction(modality, self.task.prompt)
        if self.task.task == "classify":
            return classify_instruction(modality, self.task.labels or ())
        return self.task.prompt or ""

    def prepare(self, item: _Item, result: LoadedMedia | MediaError) -> None:
        """Decide the modality and instruction of a decoded file, or mark it failed."""
        if isinstance(result, MediaError):
            item.error = _error(result.code, str(result))
            return
        item.loaded = result
        info = result.info
        has_audio = info.has_audio and not result.audio_missing  # a track that decoded to nothing counts as none
        try:
            item.modality = choose_modality(info.kind, has_audio_stream=has_audio, requested=self.options.modality,
                                            towers=self.towers, path=str(item.path))
            item.input = to_model_input(result, item.modality)
        except MediaError as exc:
            item.modality = None
            item.error = _error(exc.code, str(exc))
            return
        item.notes = list(item.input.notes)
        item.instruction = self.instruction_for(item.modality)

    # ------------------------------------------------------------ model calls
    def run_batch(self, items: list[_Item]) -> None:
        ready = [item for item in items if item.input is not None]
        if not ready:
            return
        if self.task.task == "classify":
            self._classify(ready)
        else:
            self._generate(ready)

    def _generate(self, ready: list[_Item]) -> None:
        start = perf_counter()
        try:
            generations = self.model.generate([i.input for i in ready], [i.instruction for i in ready],
                                              max_new_tokens=self.task.max_new_tokens)
        except Exception as exc:  # noqa: BLE001 - one failing batch must not end a nightly run
            if len(ready) > 1:
                for item in ready:
                    self._generate([item])
                return
            ready[0].error = _error(MODEL_ERROR_CODE, f"{ready[0].path}: {type(exc).__name__}: {exc}")
            return
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, generation in zip(ready, generations):
            item.output, item.model_ms, item.batch_size = generation.text, per_item, len(ready)

    def _classify(self, ready: list[_Item]) -> None:
        start = perf_counter()
        labels = list(self.task.labels or ())
        try:
            batch_scores = self.model.score_labels_batch([i.input for i in ready], [i.instruction for i in ready], labels)
        except Exception as exc:  # noqa: BLE001 - as in _generate: retry file by file, one bad file fails alone
            if len(ready) > 1:
                for item in ready:
                    self._classify([item])
                return
            ready[0].error = _error(MODEL_ERROR_CODE, f"{ready[0].path}: {type(exc).__name__}: {exc}")
            return
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, scores in zip(ready, batch_scores):
            probabilities = scores.probabilities()
            ranked = sorted(range(len(labels)), key=lambda k: (-probabilities[k], k))
            item.label_scores = [{"label": labels[k], "probability": probabilities[k],
                                  "log_likelihood": scores.log_likelihoods[k], "num_tokens": scores.num_tokens[k]}
                                 for k in ranked]
            item.top_k = [labels[k] for k in ranked[: self.task.top_k]]
            item.output = labels[ranked[0]]
            item.model_ms, item.batch_size = per_item, len(ready)

    # ------------------------------------------------------------ records
    def record(self, item: _Item) -> dict[str, Any]:
        loaded = item.loaded
        decode_ms = sum(loaded.timings_ms.values()) if loaded is not None else None
        total = (decode_ms or 0.0) + (item.model_ms or 0.0) if decode_ms is not None else None
        failed = item.error is not None
        return build_record(
            self.request, path=str(item.path), stamp=item.stamp, vl2_version=__version__,
            media=media_facts(loaded.info) if loaded is not None else None,
            instruction=item.instruction, modality=item.modality,
            audio_missing=bool(loaded is not None and loaded.audio_missing and item.modality == "av"),
            notes=item.notes,
            output=None if failed else item.output,
            label_scores=None if failed else item.label_scores,
            top_k=None if failed else item.top_k,
            timings_ms={"decode": _round_ms(decode_ms), "model": _round_ms(item.model_ms), "total": _round_ms(total),
                        "batch_size": item.batch_size},
            error=item.error,
        )


def run_task(
    model: Any,
    paths: Iterable[str | Path],
    task: TaskSpec,
    options: RunOptions = RunOptions(),
    *,
    is_done: Callable[[ResumeKey], bool] | None = None,
) -> Iterator[FileOutcome]:
    """Process files with a loaded VideoLlama2; yield one outcome per path, in input order.

    `is_done(key)` says whether a file was finished by an earlier run (see ResumeIndex); those are
    yielded as skipped without being decoded. Raises Vl2Error only for run-wide problems (e.g. a
    modality the model cannot give); everything about one file ends in that file's record.
    """
    runner = _Runner(model, task, options)
    todo: list[_Item] = []
    for path in paths:
        try:
            stamp = FileStamp.of(path)
        except OSError as exc:
            absolute = Path(path).absolute()
            yield FileOutcome(absolute, build_record(
                runner.request, path=str(absolute), stamp=None, vl2_version=__version__,
                error=_error(UNREADABLE_FILE_CODE, f"{path}: cannot read ({exc.strerror})")))
            continue
        if is_done is not None and is_done(resume_key(stamp, runner.request)):
            yield FileOutcome(Path(stamp.path), None)
            continue
        todo.append(_Item(Path(stamp.path), stamp))
    if not todo:
        return
    device_type = getattr(model.device, "type", "cpu")
    batch_size = options.batch_size or default_batch_size(device_type)
    workers = min(options.workers or default_workers(device_type), len(todo))
    in_flight = max(BATCHES_IN_FLIGHT * batch_size, workers)
    with DecodePool(runner.media_spec(), workers=workers, timeout_s=options.decode_timeout,
                    max_pending=in_flight) as pool:
        batch: list[_Item] = []
        ready = 0
        for item, (_, result) in zip(todo, pool.imap(item.path for item in todo)):
            runner.prepare(item, result)
            batch.append(item)
            ready += item.input is not None
            if ready >= batch_size:
                yield from _flush(runner, batch)
                batch, ready = [], 0
        yield from _flush(runner, batch)


def _flush(runner: _Runner, batch: list[_Item]) -> Iterator[FileOutcome]:
    runner.run_batch(batch)
    for item in batch:
        record = runner.record(item)
        item.loaded = item.input = None  # free the tensors before the next batch decodes
        yield FileOutcome(item.path, record)
