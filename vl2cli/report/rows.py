"""A run's JSONL as report rows and a summary: the latest record per unit of work, in output order.

Pure data (no HTML, no decoding), so the numbers the page shows are tested on their own. The report
reads an output through output.latest (a place per key, records read back one at a time) and counts
with SummaryCounter; `latest_records` is the same rule for records already in memory.
"""
from __future__ import annotations

import math
import os
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from ..output.record import is_cut_off, key_of_record, printable



@dataclass
class Summary:
    """What the top of the report says."""

    records: int = 0
    files: int = 0
    segments: int = 0
    succeeded: int = 0
    failed: int = 0
    failures_by_code: dict[str, int] = field(default_factory=dict)
    cut_off: int = 0
    span_s: float | None = None
    files_per_s: float | None = None
    tasks: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per unit of work (file, or segment of a file), the last one winning (as resume reads
    it), kept at the place of its first appearance so a file's segments stay together."""
    order: dict[Any, int] = {}
    latest: list[dict[str, Any]] = []
    for record in records:
        key = key_of_record(record)
        if key is None:
            key = ("line", len(latest))  # a foreign line: shown as it is
        if key in order:
            latest[order[key]] = record
        else:
            order[key] = len(latest)
            latest.append(record)
    return latest


def file_url(path: Any) -> str | None:
    """A file:// URL of the record's path, every byte but `/` percent-encoded, so the untrusted path can
    be neither markup nor another scheme; None for a path that is not absolute (no guess at where it was)."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        return None
    try:
        raw = os.fsencode(path)  # a name that is not UTF-8: its very bytes (records keep them as escapes)
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: no file has that name
        return None
    return "file://" + quote(raw, safe="/")


def _label_probabilities(record: dict[str, Any]) -> list[list[Any]] | None:
    """classify's top-k labels, most likely first, each as [label, probability] (compact: a row is
    encoded once per record, and a 10 000-label output would bloat the page)."""
    scores = record.get("label_scores")
    top_k = record.get("top_k")
    if not isinstance(scores, list) or not isinstance(top_k, list):
        return None
    probability = {score.get("label"): score.get("probability") for score in scores if isinstance(score, dict)}
    return [[label, probability.get(label)] for label in top_k]


def shown_details(record: dict[str, Any]) -> dict[str, Any]:
    """What a row shows beside the output: the question (or custom prompt), classify's top-k with their
    probabilities, the notes, a missing audio track, a cut-off answer, and the link to the media file.
    Only the fields a record has are given, so rows carry no empty keys."""
    details: dict[str, Any] = {"url": file_url(record.get("path"))}
    shown = printable({"prompt": record.get("prompt"), "top": _label_probabilities(record),
                       "notes": record.get("notes") or None})
    details.update(shown)
    if record.get("audio_missing"):
        details["audio_missing"] = True
    if is_cut_off(record):
        details["cut_off"] = True
    return {key: value for key, value in details.items() if value is not None}


def _created(record: dict[str, Any]) -> datetime | None:
    """The record's creation time, in UTC when it names no zone (vl2 always writes one; naive and aware
    times cannot be compared)."""
    try:
        when = datetime.fromisoformat(str(record.get("created_at")))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _seconds(milliseconds: Any) -> float:
    """A timing in seconds; 0 for one that is not a finite number a float can hold."""
    try:
        seconds = float(milliseconds or 0.0) / 1000.0
    except (OverflowError, TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0


class SummaryCounter:
    """A Summary built a record at a time, so a report never holds its rows to count them (files are told
    apart by a hash of their path, kept in an array: 8 bytes each)."""

    def __init__(self) -> None:
        self._summary = Summary()
        self._paths = array("q")  # a hash per record; told apart at the end (8 bytes each, not a set's ~60)
        self._codes: Counter[str] = Counter()
        self._tasks: set[str] = set()
        self._models: set[str] = set()
        self._first_total: float | None = None
        self._earliest: datetime | None = None
        self._latest: datetime | None = None

    def add(self, row: dict[str, Any]) -> None:
        summary = self._summary
        summary.records += 1
        self._paths.append(hash(row.get("path")))
        summary.segments += row.get("segment") is not None
        if row.get("error") is not None:
            self._codes[(row.get("error") or {}).get("code", "unknown")] += 1
        summary.cut_off += is_cut_off(row)
        if row.get("task"):
            self._tasks.add(str(row.get("task")))
        if row.get("model"):
            self._models.add(str((row.get("model") or {}).get("id")))
        if self._first_total is None:
            self._first_total = _seconds((row.get("timings_ms") or {}).get("total"))
        when = _created(row)
        if when is not None:
            self._earliest = when if self._earliest is None or when < self._earliest else self._earliest
            self._latest = when if self._latest is None or when > self._latest else self._latest

    def summary(self) -> Summary:
        """Counts, failures by error code and throughput (files per second between the first and the last
        record, the first record's own processing time included)."""
        summary = self._summary
        import numpy as np

        summary.files = len(np.unique(np.frombuffer(self._paths, dtype=np.int64))) if self._paths else 0
        summary.failed = sum(self._codes.values())
        summary.succeeded = summary.records - summary.failed
        summary.failures_by_code = dict(self._codes.most_common())
        summary.tasks, summary.models = sorted(self._tasks), sorted(self._models)
        if self._earliest is not None and self._latest is not None:
            span = (self._latest - self._earliest).total_seconds() + (self._first_total or 0.0)
            summary.span_s = span
            summary.files_per_s = summary.files / span if span > 0 else None
        return summary


def summarise(rows: Iterable[dict[str, Any]]) -> Summary:
    """Counts, failures by error code and throughput of these rows (see SummaryCounter)."""
    counter = SummaryCounter()
    for row in rows:
        counter.add(row)
    return counter.summary()
