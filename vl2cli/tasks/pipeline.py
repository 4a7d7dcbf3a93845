"""The run loop: planned files -> decode (running ahead) -> batches -> model -> one record per file.

Decoding runs in worker processes (DecodePool) whose feeder thread keeps decoding while the model
works on a batch, up to a bound on decoded-but-unused files, so the GPU does not wait on the CPU and
memory stays flat however many files there are. Workers hand over uint8 pixels; the normalisation
(a lookup table, bit-identical) happens on the model's device. A run with a single file to do decodes
it in-process instead of starting workers. Each batch goes through the encoders and the LLM together;
a batch that runs out of GPU memory is split in halves and retried (and later batches stay at the
size that fitted), and a batch that fails otherwise is retried one file at a time, so one bad file
cannot take its neighbours down. Every file ends as exactly one record, an error being a record too.

This module is the loop only; each job in it is a part of its own (`pipeline_parts.PipelineParts`):
the media spec (`media_specs`), preparing decoded items (`item_preparer`, `work_item`), handing them
to the model's device (`model_inputs`), the batch size and out-of-memory cap (`batch_sizing`), the
model call (`model_call`), the feature cache (`feature_reuse`) and the records (`record_builder`).
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..media.loader import Clip
from ..media.workers import DecodePool, InlineDecoder
from ..output.record import Request, ResumeKey
from ..settings import default_workers
from .pipeline_parts import PipelineParts, pipeline_parts
from .plan import FileOutcome, Planned, PlannedFile, SkippedFiles, build_request, plan_files
from .spec import RunOptions, TaskSpec
from .work_item import WorkItem

#: Batches decoded ahead of the model: enough to keep it busy, few enough to bound memory.
BATCHES_IN_FLIGHT = 2
#: A batch also carries files that failed to decode (their records keep their place in the order);
#: past this many per model slot it is sent to the model part-full, so failures cannot pile up.
MAX_ITEMS_PER_BATCH_SLOT = 4
#: Planned files looked at before choosing in-process decoding (exactly one file to do) or workers.
INLINE_LOOKAHEAD = 64

__all__ = ["FileOutcome", "run_task", "run_planned"]


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


def _look_ahead(planned: Iterator[Planned]) -> tuple[list[Planned], bool]:
    """The first planned files, until two need work (or INLINE_LOOKAHEAD entries); and whether that was all."""
    head: list[Planned] = []
    pending = 0
    for item in planned:
        head.append(item)
        pending += item.pending
        if pending >= 2 or len(head) >= INLINE_LOOKAHEAD:
            return head, False
    return head, True


def run_planned(model: Any, planned: Iterable[Planned], task: TaskSpec, options: RunOptions,
                request: Request) -> Iterator[FileOutcome | SkippedFiles]:
    """The model half of `run_task`, for planned files (see `vl2cli.tasks.plan`); settled entries (a
    SkippedFiles run among them) come out as they went in."""
    planned = iter(planned)
    while True:
        head, ended = _look_ahead(planned)
        if any(item.pending for item in head):
            break
        for item in head:  # settled files only so far (a rerun of a done archive): stream them, no model
            yield item.outcome
        if ended:
            return
    parts = pipeline_parts(model, task, options, request)
    spec = parts.media_spec.get()
    batch_size = parts.sizer.batch_size()
    if ended and sum(item.pending for item in head) == 1:
        decoder: Any = InlineDecoder(spec)
    else:
        cores = os.cpu_count() or 1
        workers = min(options.workers or default_workers(parts.sizer.device.type, cores), cores)
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
            items = parts.preparer.items_for(plan, result)
            batch.extend(items)
            ready += sum(item.ready for item in items)
            limit = parts.oom_cap.limit(batch_size)
            if ready >= limit or len(batch) >= MAX_ITEMS_PER_BATCH_SLOT * limit:
                yield from _flush(parts, options, batch)
                batch, ready = [], 0
        yield from _flush(parts, options, batch)


def _decode_target(item: PlannedFile) -> str | Clip | None:
    """What the decoders read for a planned item: the file, a segment's window of it, or nothing (settled)."""
    if not item.pending:
        return None
    if item.segment is not None:
        return Clip(str(item.path), float(item.segment["start_s"]), float(item.segment["end_s"]))
    return str(item.path)


def _flush(parts: PipelineParts, options: RunOptions, batch: list[WorkItem]) -> Iterator[FileOutcome]:
    on_batch = options.on_batch
    if on_batch is not None and any(item.ready for item in batch):
        on_batch([item.path for item in batch if item.ready])
    parts.model_call.run_batch(batch)
    for item in batch:
        record = parts.records.record(item).as_dict()
        item.loaded = None  # free the tensors before the next batch decodes
        yield FileOutcome(item.path, record)
