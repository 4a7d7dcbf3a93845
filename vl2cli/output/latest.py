"""The latest record per resume key over one or more outputs: the one rule resume, merge, report and
shards share ("a later record for the same unit of work wins"), in memory that does not hold records.

A first pass through the validating reader keeps, per key digest, the place of its latest record
(which output, which byte offset) in order of the key's first appearance; records are then read back
one at a time from those places (and checked again: the file may have changed in between). So a
million-record output costs a digest and an offset per key, never a million parsed records.
"""
from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reader import MAX_LINE_BYTES, ReadPosition, SkippedLines, parse_record_line, read_records
from .record import ResumeKey, key_of_record

DIGEST_BYTES = 16
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


@dataclass
class LatestRecords:
    """Where the latest record of each key is, over `sources` read in order (iterate for the records,
    in order of each key's first appearance)."""

    sources: list[Path]
    #: per kept key, in order of its first appearance: the packed place of its latest record
    places: Sequence[int] = field(default_factory=list)
    #: records read (superseded ones included)
    read: int = 0
    #: per source, the lines that were not records
    skipped: list[SkippedLines] = field(default_factory=list)

    @classmethod
    def scan(cls, paths: Iterable[str | Path]) -> "LatestRecords":
        """The first pass: every record's key digest and place, 24 bytes a record; then the latest place
        per key, found by sorting (numpy) rather than through a dict of a million keys."""
        import numpy as np

        latest = cls([Path(path) for path in paths])
        digests = bytearray()
        places = array("q")
        for number, path in enumerate(latest.sources):
            skipped = SkippedLines()
            latest.skipped.append(skipped)
            position = ReadPosition()
            for record in read_records(path, on_skipped=skipped, position=position):
                key = key_of_record(record)  # every record the reader passes has one
                if key is None:
                    continue
                digests += key_digest(key)
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
        latest.places = at[order[last][by_appearance]]  # 8 bytes a key
        return latest

    def __len__(self) -> int:
        return len(self.places)

    @property
    def superseded(self) -> int:
        return self.read - len(self.places)

    def placed_records(self, places: Iterable[int]) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """(place, the record there) for each place, read back and checked again: None for a line that
        is no longer a record (the file changed since the scan)."""
        handles: dict[int, Any] = {}
        try:
            for place in places:
                place = int(place)
                number, offset = place >> _OFFSET_BITS, place & ((1 << _OFFSET_BITS) - 1)
                handle = handles.get(number)
                if handle is None:
                    handle = handles[number] = open(self.sources[number], "rb")  # noqa: SIM115 (closed below)
                handle.seek(offset)
                yield place, parse_record_line(handle.readline(MAX_LINE_BYTES + 1))[0]
        finally:
            for handle in handles.values():
                handle.close()

    def records_at(self, places: Iterable[int]) -> Iterator[dict[str, Any]]:
        """The records at these places (a line changed since the scan is left out)."""
        return (record for _, record in self.placed_records(places) if record is not None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.records_at(self.places)
