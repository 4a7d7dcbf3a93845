"""`--log-files` lines: UTC time, status, the file's own seconds, then the path (which may hold spaces)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from vl2cli.commands.file_log import file_log_line

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ vl2: (done|failed:[a-z_]+) (\d+\.\d\d|-) s (.+)$")


def test_a_done_and_a_failed_file_each_make_one_line() -> None:
    when = datetime(2026, 11, 23, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    done = {"path": "/archive/a clip.mp4", "error": None, "timings_ms": {"decode": 10.0, "model": 3200.5, "total": 3210.5}}
    assert file_log_line(done, now=when) == "2026-11-23T01:04:05Z vl2: done 3.21 s /archive/a clip.mp4"
    failed = {"path": "/archive/gone.mp4", "error": {"code": "unreadable_file", "message": "x"},
              "timings_ms": {"decode": None, "model": None, "total": None}}
    assert file_log_line(failed, now=when) == "2026-11-23T01:04:05Z vl2: failed:unreadable_file - s /archive/gone.mp4"
    for record in (done, failed):
        assert LINE.match(file_log_line(record))
