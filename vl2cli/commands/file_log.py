"""`--log-files` (`-v`): one timestamped line per finished file, for cron logs read the next morning.

    2026-11-23T04:12:09Z vl2: done 3.21 s /archive/2026/clip.mp4
    2026-11-23T04:12:10Z vl2: failed:corrupt_media 0.04 s /archive/2026/broken.mp4

Fields: UTC time the record was written, status (`done`, or `failed:<error code>`), the file's own
seconds (decode + model, from the record's timings; `-` when it never got that far), then the path,
last because it may hold spaces. Files skipped as already done get no line (the summary counts them).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

MS_PER_S = 1000.0


def file_log_line(record: dict[str, Any], *, now: datetime | None = None) -> str:
    """The log line for one record (see the module docstring for its fields)."""
    now = now or datetime.now(timezone.utc)
    stamp = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    error = record.get("error")
    status = "done" if error is None else f"failed:{error.get('code', 'error')}"
    total_ms = (record.get("timings_ms") or {}).get("total")
    seconds = f"{total_ms / MS_PER_S:.2f}" if isinstance(total_ms, (int, float)) else "-"
    return f"{stamp} vl2: {status} {seconds} s {record['path']}"


class FileLog:
    """Writes `file_log_line` for each finished record through `emit` (the run's stderr console)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit = emit

    def finished(self, record: dict[str, Any]) -> None:
        self.emit(file_log_line(record))
