"""Which files an earlier run already finished, read from its own output file.

A file whose latest record is a success, or a permanent failure (corrupt, unsupported, empty...), is
done. A transient failure (a decoder that timed out or crashed, the model failing, e.g. out of GPU
memory) is tried again by later runs, up to MAX_ATTEMPTS runs in all; each error record counts its
`attempt`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TRANSIENT_ERROR_CODES
from .record import ResumeKey, file_key, key_of_record
from .reader import SkippedLines, read_records

#: Runs that may try a transiently failing file before its error is taken as final.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class _Latest:
    failed: bool
    transient: bool
    attempts: int


@dataclass
class ResumeIndex:
    """For each resume key, the state of its latest record (later records win)."""

    latest: dict[ResumeKey, _Latest] = field(default_factory=dict)
    #: segmented files: (file key, by) -> segment index -> the record's `segment` object
    segments: dict[tuple, dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: lines of the output that are not records (skipped: not JSON, or not valid against the schema)
    skipped: SkippedLines = field(default_factory=SkippedLines)

    @classmethod
    def from_output(cls, path: str | Path) -> "ResumeIndex":
        """Index an existing output; a missing file is an empty index."""
        index = cls()
        if not Path(path).exists():
            return index
        for record in read_records(path, on_skipped=index.skipped):
            index.add(record)
        return index

    def add(self, record: dict[str, Any]) -> None:
        """Take a record into account (one read back, or one just written)."""
        key = key_of_record(record)
        if key is None:
            return
        segment = record.get("segment")
        if segment is not None:
            self.segments.setdefault((file_key(key), segment["by"]), {})[segment["index"]] = segment
        error = record.get("error")
        if error is None:
            self.latest[key] = _Latest(False, False, 0)
            return
        attempts = error.get("attempt") if isinstance(error.get("attempt"), int) else 1
        self.latest[key] = _Latest(True, error.get("code") in TRANSIENT_ERROR_CODES, attempts)

    def is_done(self, key: ResumeKey, *, retry_failed: bool = False) -> bool:
        """Done = has a record, unless it failed transiently with attempts left (or retry_failed and it failed)."""
        latest = self.latest.get(key)
        if latest is None:
            return False
        if latest.failed and (retry_failed or (latest.transient and latest.attempts < MAX_ATTEMPTS)):
            return False
        return True

    def known_segments(self, key: ResumeKey, by: str) -> list[dict[str, Any]] | None:
        """Every segment of the file (`key`: its whole-file key) cut `by` this rule, from earlier records —
        or None unless all `count` of them have a record (then the file need not be cut again to know
        what is left to do)."""
        seen = self.segments.get((file_key(key), by))
        if not seen:
            return None
        count = next(iter(seen.values()))["count"]
        if len(seen) != count or any(s["count"] != count for s in seen.values()):  # (a record's count may be huge)
            return None
        if sorted(seen) != list(range(count)):
            return None
        return [seen[i] for i in range(count)]

    def next_attempt(self, key: ResumeKey) -> int:
        """The attempt number of a new error record for this key."""
        latest = self.latest.get(key)
        return latest.attempts + 1 if latest is not None and latest.failed else 1

    def still_failed(self) -> int:
        """Files of the output whose latest record is an error."""
        return sum(latest.failed for latest in self.latest.values())

    def __len__(self) -> int:
        return len(self.latest)
