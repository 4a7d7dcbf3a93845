"""The output record: one JSON object per input file, and the key that says "this file is done".

A record carries everything needed to tell later whether the same work would be repeated: the file's
identity (path, size, mtime) and the request (task, prompt/labels, model, frames, modality). The resume
key is computed from exactly those fields, both for a file about to be processed and for a record read
back from an earlier run, so the two always agree. A segment of a long file (`--segment`) is its own
unit of work: its key adds how the file was cut and which window it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NamedTuple

#: 2 added the optional `segment` and `sampling` objects (v1 records read back as whole-file greedy ones);
#: 3 appended `generation` (how the answer ended) and `runtime` (what made it), after `created_at`.
SCHEMA_VERSION = 3
#: The oldest version a record read back keeps when written again (a v1 record is written as its v2 form).
OLDEST_WRITTEN_VERSION = 2
#: The first version whose records carry `generation` and `runtime`.
GENERATION_VERSION = 3
TaskName = Literal["caption", "ask", "classify"]
TASKS: tuple[TaskName, ...] = ("caption", "ask", "classify")
#: Media facts copied from the probe into the record (the rest of MediaInfo is internal detail).
MEDIA_FIELDS = ("kind", "container", "duration_s", "has_video", "has_audio", "width", "height", "avg_fps",
                "num_frames", "video_codec", "audio_codec", "audio_sample_rate", "audio_channels")

#: The record's `segment` object: `by` (how the file was cut, e.g. "60s" or "scenes 2s-60s"), `index`
#: of `count`, and the window [start_s, end_s) in seconds.
SEGMENT_FIELDS = ("index", "start_s", "end_s", "count", "by")


@dataclass(frozen=True)
class Sampling:
    """Sampled (not greedy) generation: temperature > 0, nucleus mass, and the seed (None: unseeded)."""

    temperature: float
    top_p: float
    seed: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}

    def key(self) -> tuple:
        return (self.temperature, self.top_p, self.seed)


@dataclass(frozen=True)
class Request:
    """What a run asks of every file. Same request + same file = same work, skipped on rerun."""

    task: TaskName
    prompt: str | None
    labels: tuple[str, ...] | None
    model_id: str
    revision: str | None
    frames: int
    modality: str
    #: the model family (`videollama2` or `videollama`, Video-LLaMA v1); implied by the model id, so
    #: not part of the resume key
    family: str = "videollama2"
    sampling: Sampling | None = None


@dataclass(frozen=True)
class FileStamp:
    """A file's identity for resume: its absolute path, size and modification time."""

    path: str
    size_bytes: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> "FileStamp":
        """Stat the file now (raises OSError when it vanished or cannot be read)."""
        absolute = os.path.abspath(path)
        stat = os.stat(absolute)
        return cls(absolute, stat.st_size, stat.st_mtime_ns)


class FileKey(NamedTuple):
    """The resume key of a whole file: the file's identity and the request's fields that change the work.

    A tuple underneath (cheap to build for every file of a million-file walk, hashed and compared as one),
    so keys sit in sets and dicts; the field order is the order of the plain tuple `ResumeKey.flat` gives."""

    path: str
    #: None with mtime_ns for a file that could not be stat'ed (`missing_file_key`)
    size_bytes: int | None
    mtime_ns: int | None
    task: str
    prompt: str | None
    labels: tuple[str, ...] | None
    model_id: str
    revision: str | None
    frames: int
    modality: str
    #: `Sampling.key()`: (temperature, top_p, seed) as a plain tuple; None when greedy (as in v1 records)
    sampling: tuple[float, float, int | None] | None


class SegmentKey(NamedTuple):
    """Which window of a file a segment's key is about: how the file was cut, and the window's place."""

    by: str
    index: int
    start_s: float
    end_s: float


#: What a segment's part follows in the flat form (`ResumeKey.flat`).
_SEGMENT_TAG = "segment"


class ResumeKey(NamedTuple):
    """The identity of one unit of work: a whole file (`segment` None) or one segment of it."""

    file: FileKey
    segment: SegmentKey | None = None

    @property
    def whole_file(self) -> "ResumeKey":
        """The key of the whole file this key is about (a whole file's key is its own)."""
        return self if self.segment is None else ResumeKey(self.file)

    def flat(self) -> tuple[Any, ...]:
        """The key as one plain tuple: the file's fields, then for a segment "segment" and the segment's.
        It is the form keys had before they were typed, and the text of digests (`latest.key_digest`)
        and merge's order are made from it: sidecars already on disk hold those digests."""
        if self.segment is None:
            return tuple(self.file)
        return (*self.file, _SEGMENT_TAG, *self.segment)


def _segment_key(segment: dict[str, Any] | None) -> SegmentKey | None:
    """The key part of a record's `segment` object (the window as floats: JSON may spell 60.0 as 60)."""
    if segment is None:
        return None
    return SegmentKey(segment["by"], segment["index"], float(segment["start_s"]), float(segment["end_s"]))


#: Builds a key without the NamedTuple's generated (Python-level) `__new__`: `resume_key` runs for every
#: file of a rerun's walk, and this keeps it close to what a plain tuple cost.
_tuple_new = tuple.__new__


def resume_key(stamp: FileStamp, request: Request, segment: dict[str, Any] | None = None) -> ResumeKey:
    """The identity of one unit of work: a whole file, or one `segment` (the record's object) of it
    (greedy: the sampling part is None, as in v1 records)."""
    file = _tuple_new(FileKey, (stamp.path, stamp.size_bytes, stamp.mtime_ns, request.task, request.prompt,
                                request.labels, request.model_id, request.revision, request.frames, request.modality,
                                request.sampling.key() if request.sampling is not None else None))
    return _tuple_new(ResumeKey, (file, _segment_key(segment) if segment is not None else None))


def missing_file_key(path: str, request: Request) -> ResumeKey:
    """The key of a file that could not be stat'ed (its record has `file: null`): the path and the
    request, no size or mtime. Once the file exists its stamp gives it an ordinary key again."""
    return ResumeKey(resume_key(FileStamp(path, 0, 0), request).file._replace(size_bytes=None, mtime_ns=None))


def key_of_record(record: dict[str, Any]) -> ResumeKey | None:
    """The resume key of a record read back from a file (`file: null`, a file that could not be
    stat'ed: `missing_file_key`'s); None when it lacks the fields (foreign line)."""
    try:
        file, model = record["file"], record["model"]
        if file is None:
            file = {"size_bytes": None, "mtime_ns": None}
        labels = record["labels"]
        sampling = record.get("sampling")  # absent in v1 records: greedy
        sampling_key = (sampling["temperature"], sampling["top_p"], sampling["seed"]) if sampling is not None else None
        return ResumeKey(FileKey(record["path"], file["size_bytes"], file["mtime_ns"], record["task"],
                                 record["prompt"], tuple(labels) if labels is not None else None, model["id"],
                                 model["revision"], record["frames"], record["modality_requested"], sampling_key),
                         _segment_key(record.get("segment")))
    except (KeyError, TypeError, AttributeError):
        return None


def printable_text(text: str) -> str:
    """`text` as valid Unicode: the bytes of a file name that is not UTF-8 (surrogate escapes, as os.fsdecode
    gives them and records keep them) shown as `\\xNN`, so HTML and Parquet can hold it."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(value: Any) -> Any:
    """A record (or any JSON value) with every string made `printable_text`."""
    if isinstance(value, str):
        return printable_text(value)
    if isinstance(value, dict):
        return {printable_text(k): printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [printable(v) for v in value]
    return value


def media_facts(info: Any) -> dict[str, Any] | None:
    """The record's `media` object from a probe result (MediaInfo or its dict)."""
    if info is None:
        return None
    facts = info if isinstance(info, dict) else info.to_dict()
    return {name: facts.get(name) for name in MEDIA_FIELDS}


def decoding_facts(loaded: Any, modality: str | None) -> dict[str, Any] | None:
    """The record's `decoding` object: which decoder gave the frames (decord, or PyAV where vl2 diverges
    from upstream's decord; docs/media.md), the display rotation applied, and the audio stream heard.
    Only what the model was shown: no backend for an audio-only input, no stream for a silent one."""
    if loaded is None or modality is None:
        return None
    shows_frames = modality in ("video", "av") and getattr(loaded, "frame_indices", None) is not None
    hears = modality in ("audio", "av")
    return {"video_backend": getattr(loaded, "video_backend", None) if shows_frames else None,
            "video_rotation": getattr(loaded, "video_rotation", 0) if shows_frames else None,
            "audio_stream": getattr(loaded, "audio_stream_index", None) if hears else None}


def generation_facts(finish_reason: str | None, prompt_tokens: int | None,
                     output_tokens: int | None) -> dict[str, Any]:
    """The record's `generation` object: why the answer ended ("eos", or "length": cut off at the
    max_new_tokens budget) and its token counts; classify generates nothing (finish_reason and
    output_tokens null, prompt_tokens counted)."""
    return {"finish_reason": finish_reason, "prompt_tokens": prompt_tokens, "output_tokens": output_tokens}


#: The finish reason of an answer cut off at the token budget (the other one is "eos").
CUT_OFF_REASON = "length"


def is_cut_off(record: dict[str, Any]) -> bool:
    """Whether a (v3) record's answer ended at the token budget rather than on its own."""
    generation = record.get("generation")
    return isinstance(generation, dict) and generation.get("finish_reason") == CUT_OFF_REASON


def cut_off_at(record: dict[str, Any]) -> int | None:
    """The output token count of a record whose answer the budget cut off (finish_reason "length"),
    else None: what resume keeps per key to apply `needs_rerun` (v1/v2 records never say: None)."""
    generation = record.get("generation")
    if not is_cut_off(record):
        return None
    tokens = generation.get("output_tokens")
    return tokens if isinstance(tokens, int) else None


def needs_rerun(cut_at: int | None, max_new_tokens: int | None) -> bool:
    """Whether a done record (cut off at `cut_at` tokens, `cut_off_at`'s answer) is to be redone by a run
    allowing `max_new_tokens`: exactly when it was cut off below the new budget. max_new_tokens is not
    part of the resume key, so a bigger budget redoes only the answers it could lengthen."""
    return cut_at is not None and max_new_tokens is not None and cut_at < max_new_tokens


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Record:
    """One output record, typed: the request and the file it is about, then what became of it.

    Built by the pipeline, the Ray engine, planning (unreadable files) and chat; `as_dict()` gives the JSON
    object in the schema's field order (what the writer, resume, merge and the library API handle), and
    `from_dict` reads one back. Anything not known is None; `timings_ms` lists only the times that were
    measured (decode, model, total are always present, null when not measured)."""

    request: Request
    path: str
    stamp: FileStamp | None
    vl2_version: str
    media: dict[str, Any] | None = None
    instruction: str | None = None
    modality: str | None = None
    audio_missing: bool = False
    notes: tuple[str, ...] | list[str] = ()
    output: str | None = None
    label_scores: list[dict[str, Any]] | None = None
    top_k: list[str] | None = None
    timings_ms: dict[str, Any] | None = None
    #: `{"code", "message"}` (errors.record_error), `attempt` added on resume; None on success
    error: dict[str, Any] | None = None
    #: the window of the file this record is about (SEGMENT_FIELDS), None for a whole file
    segment: dict[str, Any] | None = None
    decoding: dict[str, Any] | None = None
    created_at: str = field(default_factory=_now)
    #: `generation_facts`: how the answer ended; None when the model gave none (errors, planning)
    generation: dict[str, Any] | None = None
    #: the record's `runtime` object (device, dtype, backends, versions); None when no model was loaded
    runtime: dict[str, Any] | None = None
    #: the version written: a record read back keeps its own (v2 ones stay v2, without the v3 fields)
    schema_version: int = SCHEMA_VERSION

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, in schema field order."""
        request, stamp, segment = self.request, self.stamp, self.segment
        timings = {"decode": None, "model": None, "total": None}
        timings.update(self.timings_ms or {})
        data = {
            "schema_version": self.schema_version,
            "path": self.path,
            "segment": {name: segment[name] for name in SEGMENT_FIELDS} if segment is not None else None,
            "file": {"size_bytes": stamp.size_bytes, "mtime_ns": stamp.mtime_ns} if stamp is not None else None,
            "media": self.media,
            "decoding": self.decoding,
            "task": request.task,
            "prompt": request.prompt,
            "instruction": self.instruction,
            "labels": list(request.labels) if request.labels is not None else None,
            "model": {"id": request.model_id, "revision": request.revision, "family": request.family},
            "frames": request.frames,
            "modality_requested": request.modality,
            "sampling": request.sampling.as_dict() if request.sampling is not None else None,
            "modality": self.modality,
            "audio_missing": self.audio_missing,
            "notes": list(self.notes),
            "output": self.output,
            "label_scores": self.label_scores,
            "top_k": self.top_k,
            "timings_ms": timings,
            "error": self.error,
            "vl2_version": self.vl2_version,
            "created_at": self.created_at,
        }
        if self.schema_version >= GENERATION_VERSION:  # appended: every earlier field keeps its bytes
            data["generation"] = self.generation
            data["runtime"] = self.runtime
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        """A record read back (one `read_records` accepted: schema-valid), keeping its version: a v2
        record is written back as v2 (no generation, no runtime); a v1 record becomes its v2 form (no
        segment, greedy)."""
        model, file, sampling = data["model"], data["file"], data.get("sampling")
        labels = data["labels"]
        request = Request(
            task=data["task"], prompt=data["prompt"], labels=tuple(labels) if labels is not None else None,
            model_id=model["id"], revision=model["revision"], frames=data["frames"],
            modality=data["modality_requested"], family=model.get("family", "videollama2"),
            sampling=Sampling(sampling["temperature"], sampling["top_p"], sampling["seed"]) if sampling else None)
        stamp = FileStamp(data["path"], file["size_bytes"], file["mtime_ns"]) if file is not None else None
        return cls(request, path=data["path"], stamp=stamp, vl2_version=data["vl2_version"], media=data["media"],
                   instruction=data["instruction"], modality=data["modality"], audio_missing=data["audio_missing"],
                   notes=tuple(data["notes"]), output=data["output"], label_scores=data["label_scores"],
                   top_k=data["top_k"], timings_ms=data["timings_ms"], error=data["error"],
                   segment=data.get("segment"), decoding=data.get("decoding"), created_at=data["created_at"],
                   generation=data.get("generation"), runtime=data.get("runtime"),
                   schema_version=max(data["schema_version"], OLDEST_WRITTEN_VERSION))


def build_record(request: Request, **fields: Any) -> dict[str, Any]:
    """`Record(request, **fields).as_dict()`: a record as data in one call (tests, benchmarks)."""
    return Record(request, **fields).as_dict()
