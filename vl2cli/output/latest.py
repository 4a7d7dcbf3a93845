"""The latest record per resume key over one or more outputs: the one rule resume, merge, report and
shards share ("a later record for the same unit of work wins"), in memory that does not hold records.

A first pass through the validating reader keeps, per key digest, the place of its latest record
(which output, which byte offset) in order of the key's first appearance, and a keyed digest of that
record's line; records are then read back one at a time from those places. A line read back whose
bytes still have the digest is the one the first pass checked, so it is only parsed; any other (the
file changed in between) is checked again. So a million-record output costs two digests and an offset
per key, never a million parsed records, and each kept record is checked against the schema once.
"""
from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reader import MAX_LINE_BYTES, ReadPosition, SkippedLines, decode_line, parse_record_line, read_record_lines
from .record import ResumeKey, key_of_record

DIGEST_BYTES = 16
#: A line's digest: keyed with a secret of this process, so no line can be made to match another's.
LINE_DIGEST_BYTES = 8
_LINE_KEY = os.urandom(32)
#: A FileKey's text as the plain tuple it stands for (`ResumeKey.flat`), without copying it.
_plain_repr = tuple.__repr__
#: A place packs (which output, byte offset) in one signed 64-bit integer: offsets below 2**40 (1 TiB).
_OFFSET_BITS = 40


def _canonical(value: Any) -> Any:
    """A key part as tuple equality sees it: 1, 1.0 and True are one value (JSON may spell a float 1)."""
    if isinstance(value, tuple):
        return tuple(_canonical(part) for part in value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool):
        return int(value)
    return value


def key_digest(key: ResumeKey) -> bytes:
    """A fixed-size digest of a resume key: what indexes hold instead of the key itself. It digests the
    repr of the key's flat form, as before keys were typed: sidecars on disk hold these digests, and any
    change to that text would make every file they list look undone."""
    file = key.file
    if key.segment is None and file.sampling is None:  # no part that may hold floats: the common case, kept cheap
        text = _plain_repr(file)
    else:
        text = repr(_canonical(key.flat()))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=DIGEST_BYTES).digest()


def line_digest(raw: bytes) -> int:
    """A keyed digest of a line's bytes (an unsigned 64-bit integer): whether a line read back is still
    the one checked before."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=LINE_DIGEST_BYTES, key=_LINE_KEY).digest(), "little")


@dataclass
class LatestRecords:
    """Where the latest record of each key is, over `sources` read in order (iterate for the records,
    in order of each key's first appearance)."""

    sources: list[Path]
    #: per kept key, in order of its first appearance: the packed place of its latest record
    places: Sequence[int] = field(default_factory=list)
    #: per kept key, beside its place: line_digest of the line the scan checked there
    line_digests: Sequence[int] = field(default_factory=list)
    #: records read (superseded ones included)
    read: int = 0
    #: per source, the lines that were not records
    skipped: list[SkippedLines] = field(default_factory=list)

    @classmethod
    def scan(cls, paths: Iterable[str | Path]) -> "LatestRecords":
        """The first pass: every record's key digest, place and line digest, 32 bytes a record; then the
        latest place per key, found by sorting (numpy) rather than through a dict of a million keys."""
        import numpy as np

        latest = cls([Path(path) for path in paths])
        digests = bytearray()
        lines = array("Q")
        places = array("q")
        for number, path in enumerate(latest.sources):
            skipped = SkippedLines()
            latest.skipped.append(skipped)
            position = ReadPosition()
            for record, raw in read_record_lines(path, on_skipped=skipped, position=position):
                key = key_of_record(record)  # every record the reader passes has one
                if key is None:
                    continue
                digests += key_digest(key)
                lines.append(line_digest(raw))
                places.append((number << _OFFSET_BITS) | position.start)
        latest.read = len(places)
        if not places:
            return latest
        halves = np.frombuffer(bytes(digests), dtype=">u8").reshape(-1, 2)
        del digests
        order = np.lexsort((np.arange(len(places)), halves[:, 1], halves[:, 0]))  # by digest, then place in the read
        ordered = halves[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = np.any(ordered[1:] != ordered[:-1], axis=1)
        del ordered, halves
        first = np.flatnonzero(starts)
        last = np.append(first[1:], len(order)) - 1
        by_appearance = np.argsort(order[first], kind="stable")
        at = np.frombuffer(places, dtype=np.int64)
        kept = order[last][by_appearance]
        latest.places = at[kept]  # 8 bytes a key
        latest.line_digests = np.frombuffer(lines, dtype=np.uint64)[kept]  # and 8 more
        return latest

    def __len__(self) -> int:
        return len(self.places)

    @property
    def superseded(self) -> int:
        return self.read - len(self.places)

    def placed_records(self, places: Iterable[int], line_digests: Iterable[int] | None = None,
                       ) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(place, the record there) for each place, read back: None for a line that is no longer a
        record (the file changed since the scan). `line_digests` (beside `places`, as the scan kept
        them): a line that still has its digest is only parsed; without them, or for a line that
        changed, every line is checked again."""
        handles: dict[int, Any] = {}
        digests = iter(line_digests) if line_digests is not None else None
        try:
            for place in places:
                place = int(place)
                number, offset = place >> _OFFSET_BITS, place & ((1 << _OFFSET_BITS) - 1)
                handle = handles.get(number)
                if handle is None:
                    handle = handles[number] = open(self.sources[number], "rb")  # noqa: SIM115 (closed below)
                handle.seek(offset)
                raw = handle.readline(MAX_LINE_BYTES + 1)
                checked = digests is not None and line_digest(raw) == int(next(digests))
                yield place, decode_line(raw) if checked else parse_record_line(raw)[0]
        finally:
            for handle in handles.values():
                handle.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The latest record of each key, in order of the key's first appearance."""
        placed = self.placed_records(self.places, self.line_digests)
        return (record for _, record in placed if record is not None)
