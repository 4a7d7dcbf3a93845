"""Which files an earlier run already finished, read from its own output file.

A file whose latest record is a success, or a permanent failure (corrupt, unsupported, empty...), is
done. A transient failure (a decoder that timed out or crashed, the model failing, e.g. out of GPU
memory) is tried again by later runs, up to MAX_ATTEMPTS runs in all; each error record counts its
`attempt`. A success whose answer was cut off at the token budget is done for runs with the same or a
smaller budget, and redone by one allowing more tokens (`record.needs_rerun`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TRANSIENT_ERROR_CODES
from .index_file import (Coverage, IndexFile, coverage_of, index_path_for, pack_entry, read_index,
                         unpack_entries, write_index)
from .latest import key_digest
from .reader import NAMED_LINES, ReadPosition, SkippedLine, SkippedLines, read_records
from .record import ResumeKey, cut_off_at, key_of_record, needs_rerun

#: Runs that may try a transiently failing file before its error is taken as final.
MAX_ATTEMPTS = 3

# A key's state in one int (what the sidecar stores per key, 32 bits): bit 0 failed, bit 1 transient,
# bit 2 "a success cut off at the token budget"; the rest is the attempt count of a failure (capped: past
# MAX_ATTEMPTS the exact number no longer changes anything) or the output tokens of a cut-off answer.
_FAILED, _TRANSIENT, _CUT_OFF, _COUNT_SHIFT = 1, 2, 4, 3
_MAX_STORED_ATTEMPTS = (1 << 14) - 1
#: Larger than any token budget a run may set (settings.RANGES["max_new_tokens"]), and fits the state word.
_MAX_STORED_TOKENS = (1 << 28) - 1
_DONE = 0
#: Characters of a skipped line's reason the sidecar keeps (the warning quotes the first one).
_STORED_REASON_CHARS = 300


def _state_of(record: dict[str, Any]) -> int:
    error = record.get("error")
    if error is None:
        cut_at = cut_off_at(record)
        return _DONE if cut_at is None else _CUT_OFF | (min(max(cut_at, 0), _MAX_STORED_TOKENS) << _COUNT_SHIFT)
    attempts = error.get("attempt") if isinstance(error.get("attempt"), int) else 1
    attempts = min(max(attempts, 0), _MAX_STORED_ATTEMPTS)
    return _FAILED | (_TRANSIENT if error.get("code") in TRANSIENT_ERROR_CODES else 0) | (attempts << _COUNT_SHIFT)


@dataclass
class ResumeIndex:
    """For each resume key (by its digest), the state of its latest record (later records win).

    `from_output` reads an output through its sidecar (index_file.py): only the lines appended since the
    sidecar was written go through the validating reader."""

    latest: dict[bytes, int] = field(default_factory=dict)
    #: segmented files: (digest of the file key, by) -> segment index -> the record's `segment` object
    segments: dict[tuple[bytes, str], dict[int, dict[str, Any]]] = field(default_factory=dict)
    #: lines of the output that are not records (skipped: not JSON, or not valid against the schema)
    skipped: SkippedLines = field(default_factory=SkippedLines)
    #: a segment record's key digest -> (its file key's digest, its segment): what the sidecar keeps of it
    _segment_of: dict[bytes, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    _out: str | None = None
    _position: ReadPosition = field(default_factory=ReadPosition)
    _coverage: Coverage | None = None

    @classmethod
    def from_output(cls, path: str | Path, *, keep: bool = False) -> "ResumeIndex":
        """Index an existing output; a missing file is an empty index. `keep` (the caller holds the output's
        lock): write the sidecar when it was missing or stale."""
        index = cls()
        if not Path(path).exists():
            return index
        index._out = str(path)
        sidecar = read_index(index_path_for(path))
        if sidecar is not None and coverage_of(path, sidecar.coverage.offset, sidecar.coverage.lines) == sidecar.coverage:
            if index._load(sidecar):
                index._coverage = sidecar.coverage
        if index._coverage is None:
            index.latest, index.segments, index._segment_of, index.skipped = {}, {}, {}, SkippedLines()
            index._position = ReadPosition()
        start = index._position.offset
        for record in read_records(path, on_skipped=index.skipped, position=index._position):
            index.add(record)
        if keep and (index._coverage is None or index._position.offset != start):
            index._persist()
        return index

    def _load(self, sidecar: IndexFile) -> bool:
        """Take a sidecar's content (False: its entries are damaged; nothing taken)."""
        try:
            latest, extras = unpack_entries(sidecar.entries, with_extras=sidecar.with_extras)
            segments: dict[tuple[bytes, str], dict[int, dict[str, Any]]] = {}
            segment_of = {}
            for digest, extra in extras:
                file_hex, segment = json.loads(extra)
                file_digest = bytes.fromhex(file_hex)
                segments.setdefault((file_digest, segment["by"]), {})[segment["index"]] = segment
                segment_of[digest] = (file_digest, segment)
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            return False
        self.latest, self.segments, self._segment_of = latest, segments, segment_of
        self.skipped = SkippedLines([SkippedLine(number, reason) for number, reason in sidecar.skipped_first],
                                    uncounted=max(0, sidecar.skipped_total - len(sidecar.skipped_first)))
        self._position = ReadPosition(sidecar.coverage.offset, sidecar.coverage.lines)
        return True

    def _persist(self) -> None:
        """Write the sidecar from what was read (never call it once records of a run were added)."""
        assert self._out is not None
        coverage = coverage_of(self._out, self._position.offset, self._position.line)
        if coverage is None:
            return
        extras = {digest: json.dumps([file_digest.hex(), segment]).encode("utf-8")
                  for digest, (file_digest, segment) in self._segment_of.items()}
        entries = b"".join(pack_entry(digest, state, extras.get(digest, b"")) for digest, state in self.latest.items())
        first = [(line.number, line.reason[:_STORED_REASON_CHARS]) for line in self.skipped.lines[:NAMED_LINES]]
        try:
            write_index(index_path_for(self._out), IndexFile(coverage, len(self.skipped), first, entries, bool(extras)))
        except OSError:
            return  # a folder vl2 may append to but not create files in: the next run reads the whole output
        self._coverage = coverage

    def save(self) -> None:
        """Bring the sidecar up to what the output holds now (at the end of a run, under its lock): the lines
        this run appended are read back from the output, the truth, not taken from memory."""
        if self._out is None:
            return
        try:
            now = os.stat(self._out)
        except OSError:
            return
        covered = self._coverage
        if covered is not None and (now.st_dev, now.st_ino, now.st_size) == (covered.device, covered.inode, covered.offset):
            return
        try:
            type(self).from_output(self._out, keep=True)
        except OSError:
            pass  # the output went away or cannot be read now: the next run reads what is there

    def add(self, record: dict[str, Any]) -> None:
        """Take a record into account (one read back, or one just written)."""
        key = key_of_record(record)
        if key is None:
            return
        digest = key_digest(key)
        segment = record.get("segment")
        if segment is not None:
            file_digest = key_digest(key.whole_file)
            self.segments.setdefault((file_digest, segment["by"]), {})[segment["index"]] = segment
            self._segment_of[digest] = (file_digest, segment)
        self.latest[digest] = _state_of(record)

    def is_done(self, key: ResumeKey, *, retry_failed: bool = False, max_new_tokens: int | None = None) -> bool:
        """Done = has a record, unless it failed transiently with attempts left (or retry_failed and it
        failed), or its answer was cut off below `max_new_tokens` (the run's budget; None: never redone)."""
        state = self.latest.get(key_digest(key))
        if state is None:
            return False
        if state & _CUT_OFF and needs_rerun(state >> _COUNT_SHIFT, max_new_tokens):
            return False
        if state & _FAILED and (retry_failed or (state & _TRANSIENT and state >> _COUNT_SHIFT < MAX_ATTEMPTS)):
            return False
        return True

    def known_segments(self, key: ResumeKey, by: str) -> list[dict[str, Any]] | None:
        """Every segment of the file (`key`: its whole-file key) cut `by` this rule, from earlier records —
        or None unless all `count` of them have a record (then the file need not be cut again to know
        what is left to do)."""
        seen = self.segments.get((key_digest(key.whole_file), by))
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
        state = self.latest.get(key_digest(key))
        return (state >> _COUNT_SHIFT) + 1 if state is not None and state & _FAILED else 1

    def still_failed(self) -> int:
        """Files of the output whose latest record is an error."""
        return sum(state & _FAILED for state in self.latest.values())

    def pending_retry(self) -> int:
        """Of `still_failed`, the transient failures a later run tries again (attempts left)."""
        return sum(bool(state & _FAILED and state & _TRANSIENT and state >> _COUNT_SHIFT < MAX_ATTEMPTS)
                   for state in self.latest.values())

    def __len__(self) -> int:
        return len(self.latest)
