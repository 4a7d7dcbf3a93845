"""A run's JSONL as report rows and a summary: the latest record per unit of work, in output order.

Pure data (no HTML, no decoding), so the numbers the page shows are tested on their own.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..output.record import key_of_record


@dataclass
class Summary:
    """What the top of the report says."""

    records: int = 0
    files: int = 0
    segments: int = 0
    succeeded: int = 0
    failed: int = 0
    failures_by_code: dict[str, int] = field(default_factory=dict)
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


def summarise(rows: list[dict[str, Any]]) -> Summary:
    """Counts, failures by error code and throughput (files per second between the first and the last
    record, the first record's own processing time included)."""
    summary = Summary(records=len(rows))
    summary.files = len({row.get("path") for row in rows})
    summary.segments = sum(row.get("segment") is not None for row in rows)
    codes = Counter((row.get("error") or {}).get("code", "unknown") for row in rows if row.get("error") is not None)
    summary.failed = sum(codes.values())
    summary.succeeded = summary.records - summary.failed
    summary.failures_by_code = dict(codes.most_common())
    summary.tasks = sorted({str(row.get("task")) for row in rows if row.get("task")})
    summary.models = sorted({str((row.get("model") or {}).get("id")) for row in rows if row.get("model")})
    times = sorted(t for t in (_created(row) for row in rows) if t is not None)
    if times:
        first_total = _seconds((rows[0].get("timings_ms") or {}).get("total"))
        span = (times[-1] - times[0]).total_seconds() + first_total
        summary.span_s = span
        summary.files_per_s = summary.files / span if span > 0 else None
    return summary
