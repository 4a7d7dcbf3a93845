"""The run loop: planned files -> decode (running ahead) -> batches -> model -> one record per file.

Decoding runs in worker processes (DecodePool) whose feeder thread keeps decoding while the model
works on a batch, up to a bound on decoded-but-unused files, so the GPU does not wait on the CPU and
memory stays flat however many files there are. Workers hand over uint8 pixels; the normalisation
(a lookup table, bit-identical) happens on the model's device. A run with a single file to do decodes
it in-process instead of starting workers. Each batch goes through the encoders and the LLM together;
a batch that runs out of GPU memory is split in halves and retried (and later batches stay at the
size that fitted), and a batch that fails otherwise is retried one file at a time, so one bad file
cannot take its neighbours down. Every file ends as exactly one record, an error being a record too.
"""
from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

from .. import __version__
from ..constants import AUDIO_FBANK_FRAMES, FBANK_NUM_MEL_BINS
from ..errors import MediaError, ModelError, NoVideoStreamError, record_error
from ..media.image import ImageProcessorSpec, normalize_levels, value_lookup_table
from ..media.loader import Clip, LoadedMedia, MediaSpec
from ..media.workers import DecodePool, InlineDecoder
from ..model.feature_cache import FeatureCache
from ..model.inputs import LabelScores, MultimodalInput
from ..output.record import FileStamp, Record, Request, ResumeKey, decoding_facts, media_facts
from ..settings import CPU_BATCH_SIZE, GPU_MAX_BATCH_SIZE, default_workers
from .budget import LlmShape, batch_size_for_memory, bytes_per_item
from .modality import choose_modality, decode_wants_audio, to_model_input
from .plan import FileOutcome, PlannedFile, build_request, plan_files, towers_of
from .prompts import caption_instruction, classify_instruction
from .spec import RunOptions, TaskSpec

log = logging.getLogger(__name__)

MS_PER_S = 1000.0
TIMING_DECIMALS = 2
#: Batches decoded ahead of the model: enough to keep it busy, few enough to bound memory.
BATCHES_IN_FLIGHT = 2
#: A batch also carries files that failed to decode (their records keep their place in the order);
#: past this many per model slot it is sent to the model part-full, so failures cannot pile up.
MAX_ITEMS_PER_BATCH_SLOT = 4
#: Planned files looked at before choosing in-process decoding (exactly one file to do) or workers.
INLINE_LOOKAHEAD = 64
#: Tokens of a prompt besides its media (system prompt, instruction, chat markup), for memory planning.
PROMPT_TEXT_TOKENS = 256
#: Files whose encoded media a run with several questions keeps: a file's questions are adjacent in the
#: stream, but may straddle two batches.
FEATURE_CACHE_FILES = 2

__all__ = ["FileOutcome", "run_task", "run_planned"]


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


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
    notes: list[str] = field(default_factory=list)
    #: this item's request when the run makes several per file (ask with several questions)
    request: Request | None = None

    @property
    def ready(self) -> bool:
        return self.modality is not None and self.error is None


def _round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, TIMING_DECIMALS)


class PipelineRunner:
    """Holds what every file of a run shares; turns decoded files into records."""

    def __init__(self, model: Any, task: TaskSpec, options: RunOptions, request: Request) -> None:
        self.model, self.task, self.options, self.request = model, task, options, request
        self.towers = towers_of(model)
        #: the largest batch known to fit, once one ran out of memory
        self.batch_cap: int | None = None
        self._pixel_table: torch.Tensor | None = None
        self._media_spec: MediaSpec | None = None
        #: encoded media kept between model calls: set when a file is asked several questions (and by
        #: `vl2 chat`), so each file is encoded once; None: nothing kept
        self.feature_cache: FeatureCache | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def media_spec(self) -> MediaSpec:
        """What the decoders make of each file for this model (computed once per run)."""
        if self._media_spec is None:
            self._media_spec = self._build_media_spec()
        return self._media_spec

    def _build_media_spec(self) -> MediaSpec:
        config = self.model.image_processor_config
        return MediaSpec(
            num_frames=self.model.num_frames,
            image=ImageProcessorSpec.from_config(config) if config is not None else None,
            want_audio=decode_wants_audio(self.options.modality, self.towers),
            video_backend=self.options.video_backend,  # type: ignore[arg-type]
            normalize_pixels=False,  # uint8 crosses to this process; normalised on the model's device
            family=getattr(self.model, "family", "videollama2"),
        )

    def instruction_for(self, modality: str, request: Request | None = None) -> str:
        if self.task.task == "caption":
            return caption_instruction(modality, self.task.prompt)
        if self.task.task == "classify":
            return classify_instruction(modality, self.task.labels or ())
        return (request or self.request).prompt or ""

    def items_for(self, plan: PlannedFile, result: LoadedMedia | MediaError) -> list[WorkItem]:
        """A decoded file's items: one per request still to do for it (they share the decoded media)."""
        requests = plan.requests or (None,)
        if len(requests) > 1 and self.feature_cache is None:
            self.feature_cache = FeatureCache(max_entries=FEATURE_CACHE_FILES)
        items = []
        for request in requests:
            item = WorkItem(plan.path, plan.stamp, plan.segment, request=request)
            self.prepare(item, result)
            items.append(item)
        return items

    def feature_key(self, item: WorkItem) -> tuple | None:
        """What identifies a file's encoded media: its stamp, the model, frames and modality."""
        if self.feature_cache is None or item.stamp is None:
            return None
        request = item.request or self.request
        segment = (item.segment["start_s"], item.segment["end_s"]) if item.segment is not None else None
        return (item.stamp, segment, request.model_id, request.revision, request.frames, item.modality)

    def prepare(self, item: WorkItem, result: LoadedMedia | MediaError) -> None:
        """Decide the modality and instruction of a decoded file, or mark it failed."""
        if isinstance(result, MediaError):
            item.error = result.as_record_error()
            return
        item.loaded = result
        info = result.info
        has_audio = info.has_audio and not result.audio_missing  # a track that decoded to nothing counts as none
        kind = info.kind
        if result.video_absent:  # a segment after the video track's end: its sound is what there is
            if self.options.modality in ("video", "av") or not self.towers.has_audio or not has_audio:
                item.error = record_error(NoVideoStreamError.code, f"{item.path}: this segment lies after the end "
                                                                   "of the video track: it has no frames to show")
                return
            kind = "audio"
        try:
            item.modality = choose_modality(kind, has_audio_stream=has_audio, requested=self.options.modality,
                                            towers=self.towers, path=str(item.path))
        except MediaError as exc:
            item.modality = None
            item.error = exc.as_record_error()
            return
        item.instruction = self.instruction_for(item.modality, item.request)

    # ------------------------------------------------------------ hand-off
    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned staging lets the copy overlap the host's next work
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _normalised(self, levels: torch.Tensor) -> torch.Tensor:
        if levels.dtype != torch.uint8:  # a loader that normalised already
            return self._to_device(levels)
        if self._pixel_table is None:
            self._pixel_table = value_lookup_table(self.media_spec().image).to(self.device)
        return normalize_levels(self._to_device(levels), self._pixel_table)

    def model_input(self, item: WorkItem) -> MultimodalInput:
        """The decoded file as the model takes it, its tensors on the model's device."""
        loaded = item.loaded
        pixels = loaded.pixel_values if item.modality != "audio" else None
        fbank = loaded.fbank if item.modality in ("audio", "av") else None
        model_input = to_model_input(loaded, item.modality,
                                     pixel_values=self._normalised(pixels) if pixels is not None else None,
                                     fbank=self._to_device(fbank) if fbank is not None else None)
        model_input.feature_key = self.feature_key(item)
        item.notes = list(model_input.notes)
        return model_input

    # ------------------------------------------------------------ batch sizes
    def batch_size(self) -> int:
        """--batch-size, else 1 on CPU, else what the GPU's free memory holds (see `budget`)."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        free_bytes, _ = torch.cuda.mem_get_info(self.device)
        shape = LlmShape.of(self.model.llm.config, dtype_bytes=torch.finfo(self.model.dtype).bits // 8)
        item = bytes_per_item(shape, prompt_tokens=self.media_tokens() + PROMPT_TEXT_TOKENS,
                              new_tokens=self.task.max_new_tokens if self.task.task != "classify" else 0)
        chosen = batch_size_for_memory(free_bytes=free_bytes, item_bytes=item, cap=GPU_MAX_BATCH_SIZE)
        log.info("batch size %d (%.1f GiB free on the GPU, ≈%.0f MiB per file)", chosen, free_bytes / 2**30, item / 2**20)
        return chosen

    def media_tokens(self) -> int:
        """Feature tokens of the largest input this run can see: blank features through the eager
        connector and a blank fbank through BEATs (never the compiled encoders, whose first call would
        then fix their shapes to a batch of one)."""
        if hasattr(self.model, "media_tokens"):  # a family that knows its own (Video-LLaMA v1)
            return int(self.model.media_tokens())
        spec = self.media_spec()
        encoders = self.model.torch_encoders
        device, dtype = self.device, self.model.dtype
        tokens = 0
        with torch.inference_mode():
            if spec.image is not None:
                tower = encoders.vision_tower
                features = torch.zeros(1, self.model.num_frames, tower.num_patches, tower.hidden_size,
                                       device=device, dtype=dtype)
                if encoders.pool_frames:
                    features = features.mean(dim=1)
                tokens += encoders.connector(features).shape[1]
            if spec.want_audio:
                fbank = torch.zeros(1, AUDIO_FBANK_FRAMES, FBANK_NUM_MEL_BINS, device=device, dtype=dtype)
                tokens += encoders.audio_tower(fbank).shape[1]
        return tokens

    # ------------------------------------------------------------ model calls
    def run_batch(self, items: list[WorkItem]) -> None:
        ready = [item for item in items if item.ready]
        if ready:
            self._call(ready, self._classify if self.task.task == "classify" else self._generate)

    def run_guarded(self, ready: list[WorkItem], fn: Callable[[list[WorkItem]], None]) -> None:
        """`fn` over ready items with a batch's error handling, for a caller's own model call (`vl2 chat`)."""
        self._call(ready, fn)

    def _call(self, ready: list[WorkItem], fn: Callable[[list[WorkItem]], None]) -> None:
        """Run `fn` on a batch; out of memory -> halves (and a lower cap); other errors -> one by one."""
        try:
            fn(ready)
        except Exception as exc:  # noqa: BLE001 - one failing batch must not end a nightly run
            if len(ready) > 1 and _is_out_of_memory(exc):
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                half = (len(ready) + 1) // 2
                self.batch_cap = half if self.batch_cap is None else min(self.batch_cap, half)
                log.warning("out of memory with %d files in a batch; retrying as batches of %d", len(ready), half)
                self._call(ready[:half], fn)
                self._call(ready[half:], fn)
            elif len(ready) > 1:
                for item in ready:
                    self._call([item], fn)
            else:
                what = "out of memory" if _is_out_of_memory(exc) else f"{type(exc).__name__}: {exc}"
                ready[0].error = record_error(ModelError.code, f"{ready[0].path}: {what}")

    def _generate(self, ready: list[WorkItem]) -> None:
        start = perf_counter()
        inputs = [self.model_input(item) for item in ready]
        generations = self.model.generate(inputs, [i.instruction for i in ready], max_new_tokens=self.task.max_new_tokens,
                                          **self.generate_options())
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, generation in zip(ready, generations):
            item.output, item.model_ms, item.batch_size = generation.text, per_item, len(ready)

    def generate_options(self) -> dict[str, Any]:
        """`generate` keywords beyond the defaults: the feature cache, sampling (greedy needs none)."""
        options: dict[str, Any] = {}
        if self.feature_cache is not None:
            options["feature_cache"] = self.feature_cache
        sampling = self.task.sampling
        if sampling is not None:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed)
        return options

    def _classify(self, ready: list[WorkItem]) -> None:
        start = perf_counter()
        labels = list(self.task.labels or ())
        inputs = [self.model_input(item) for item in ready]
        all_scores = self.model.score_labels_batch(inputs, [i.instruction for i in ready], labels)
        per_item = (perf_counter() - start) * MS_PER_S / len(ready)
        for item, scores in zip(ready, all_scores):
            self._set_label_scores(item, labels, scores)
            item.model_ms, item.batch_size = per_item, len(ready)

    def _set_label_scores(self, item: WorkItem, labels: list[str], scores: LabelScores) -> None:
        probabilities = scores.probabilities()
        ranked = sorted(range(len(labels)), key=lambda k: (-probabilities[k], k))
        item.label_scores = [{"label": labels[k], "probability": probabilities[k],
                              "log_likelihood": scores.log_likelihoods[k], "num_tokens": scores.num_tokens[k]}
                             for k in ranked]
        item.top_k = [labels[k] for k in ranked[: self.task.top_k]]
        item.output = labels[ranked[0]]

    # ------------------------------------------------------------ records
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
        )


def run_task(
    model: Any,
    paths: Iterable[str | Path],
    task: TaskSpec,
    options: RunOptions = RunOptions(),
    *,
    is_done: Callable[[ResumeKey], bool] | None = None,
) -> Iterator[FileOutcome]:
    """Process files with a loaded VideoLlama2 (or a LazyModel); yield one outcome per path.

    `is_done(key)` says whether a file was finished by an earlier run (see ResumeIndex); those are
    yielded as skipped without being decoded. Outcomes come in input order. Raises Vl2Error only for
    run-wide problems (e.g. a modality the model cannot give); everything about one file ends in that
    file's record.
    """
    request = build_request(model, task, options)
    yield from run_planned(model, plan_files(paths, request, is_done, segmenting=options.segmenting),
                           task, options, request)


def _look_ahead(planned: Iterator[PlannedFile]) -> tuple[list[PlannedFile], bool]:
    """The first planned files, until two need work (or INLINE_LOOKAHEAD files); and whether that was all."""
    head: list[PlannedFile] = []
    pending = 0
    for item in planned:
        head.append(item)
        pending += item.pending
        if pending >= 2 or len(head) >= INLINE_LOOKAHEAD:
            return head, False
    return head, True


def run_planned(model: Any, planned: Iterable[PlannedFile], task: TaskSpec, options: RunOptions,
                request: Request) -> Iterator[FileOutcome]:
    """The model half of `run_task`, for planned files (see `vl2cli.tasks.plan`)."""
    planned = iter(planned)
    while True:
        head, ended = _look_ahead(planned)
        if any(item.pending for item in head):
            break
        for item in head:  # settled files only so far (a rerun of a done archive): stream them, no model
            yield item.outcome
        if ended:
            return
    runner = PipelineRunner(model, task, options, request)
    spec = runner.media_spec()
    batch_size = runner.batch_size()
    if ended and sum(item.pending for item in head) == 1:
        decoder: Any = InlineDecoder(spec)
    else:
        cores = os.cpu_count() or 1
        workers = min(options.workers or default_workers(runner.device.type, cores), cores)
        decoder = DecodePool(spec, workers=workers, timeout_s=options.decode_timeout,
                             max_pending=max(BATCHES_IN_FLIGHT * batch_size, workers))
    with decoder:
        batch: list[WorkItem] = []
        ready = 0
        stream = decoder.imap_items(itertools.chain(head, planned), path_of=_decode_target)
        for plan, result in stream:
            if not plan.pending:
                yield plan.outcome  # settled (skipped, unreadable): no record to keep in order with the batch
                continue
            items = runner.items_for(plan, result)
            batch.extend(items)
            ready += sum(item.ready for item in items)
            limit = min(batch_size, runner.batch_cap or batch_size)
            if ready >= limit or len(batch) >= MAX_ITEMS_PER_BATCH_SLOT * limit:
                yield from _flush(runner, batch)
                batch, ready = [], 0
        yield from _flush(runner, batch)


def _decode_target(item: PlannedFile) -> str | Clip | None:
    """What the decoders read for a planned item: the file, a segment's window of it, or nothing (settled)."""
    if not item.pending:
        return None
    if item.segment is not None:
        return Clip(str(item.path), float(item.segment["start_s"]), float(item.segment["end_s"]))
    return str(item.path)


def _flush(runner: PipelineRunner, batch: list[WorkItem]) -> Iterator[FileOutcome]:
    on_batch = runner.options.on_batch
    if on_batch is not None and any(item.ready for item in batch):
        on_batch([item.path for item in batch if item.ready])
    runner.run_batch(batch)
    for item in batch:
        record = runner.record(item).as_dict()
        item.loaded = None  # free the tensors before the next batch decodes
        yield FileOutcome(item.path, record)
