"""Merge JSONL outputs (e.g. the part files of a sharded run) into one file: the record that resume
would take for each key — the last one — once, as JSONL or Parquet.

The merged file is a new, derived file: it is written whole to a temporary name and renamed over
`out`, so a reader never sees half of it.

Memory does not grow with the records' size: the scan keeps a digest and a place per record, then a
place per kept key (latest.py); the walk order is found by an external sort (spill_sort.py) whose runs
of path and request strings go to a temporary folder once they pass a bound, leaving a place per kept
key in that order; records are then read back from their outputs one at a time, for JSONL written a
line at a time, for Parquet a row group at a time (parquet.py).
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic_files import replacing
from ..errors import Vl2Error
from .latest import LatestRecords
from .parquet import write_parquet
from .record import key_of_record
from .spill_sort import RUN_BYTES, RUN_ITEMS, spilling_sorted
from .writer import encode_record

MergeFormat = Literal["jsonl", "parquet"]
MERGE_FORMATS: tuple[MergeFormat, ...] = ("jsonl", "parquet")


class MergedRecords(Sequence):
    """The kept records, read back from their outputs one at a time (never all held in memory). Each place
    comes with the digest of the line the scan checked there, so a line still unchanged is only parsed."""

    def __init__(self, latest: LatestRecords, places: Sequence[int], line_digests: Sequence[int]) -> None:
        self._latest = latest
        self._places = places
        self._line_digests = line_digests

    def __len__(self) -> int:
        return len(self._places)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        placed = self._latest.placed_records([self._places[index]], [self._line_digests[index]])
        return next(record for _, record in placed if record is not None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        placed = self._latest.placed_records(self._places, self._line_digests)
        return (record for _, record in placed if record is not None)

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Iterable) else NotImplemented


@dataclass
class Merged:
    """The records kept (one per resume key, ordered by path) and how many lines were not records
    (`warnings`: one line per input file that had some, naming them)."""

    records: Sequence[dict[str, Any]]
    superseded: int
    foreign: int
    warnings: list[str] = field(default_factory=list)


def _walk_order(record: dict[str, Any]) -> tuple[str, str]:
    """Sorts as (path components, rest of the key) do: "/" made the lowest character, so a folder's
    files come before a sibling name that merely starts with the folder's name (a/b.png before a.png)."""
    key = key_of_record(record)
    return str(record["path"]).replace("/", "\0"), repr(key.flat()[1:] if key is not None else ())


#: What one sort item costs in memory beyond its two strings' characters (tuples, str and int headers).
_SORT_ITEM_OVERHEAD = 250


def _sort_weight(item: tuple[tuple[str, str], int, int]) -> int:
    (path, rest), _, _ = item
    return len(path) + len(rest) + _SORT_ITEM_OVERHEAD


def latest_records(paths: Iterable[str | Path], *, temp_dir: str | Path | None = None,
                   run_items: int = RUN_ITEMS, run_bytes: int = RUN_BYTES) -> Merged:
    """The last record per resume key over `paths` read in order, as `ResumeIndex` reads an output.

    Order: by path, component by component — the order a walk of one folder gives (names sorted per
    folder, depth first) — then by the rest of the key, so equal inputs always merge to equal bytes.
    Memory: a key digest, a place and a line digest per record, then a place and a line digest per
    kept key (a line read back unchanged is parsed, not checked again); the sort keys (path and
    request) are sorted in runs of at most `run_items` keys or about `run_bytes` bytes, spilled to a
    temporary folder under `temp_dir` (default: the system's) when there is more than one run, and
    removed before this returns.
    """
    latest = LatestRecords.scan(paths)
    warnings = [warning for path, skipped in zip(latest.sources, latest.skipped)
                if (warning := skipped.describe(path)) is not None]
    foreign = sum(len(skipped) for skipped in latest.skipped)
    # (walk order, place, line digest): keys are unique, so the digest never decides the order
    keyed = ((_walk_order(record), place, int(digest))
             for (place, record), digest in zip(latest.placed_records(latest.places, latest.line_digests),
                                                latest.line_digests)
             if record is not None)
    places, line_digests = array("q"), array("Q")
    for _, place, digest in spilling_sorted(keyed, weigh=_sort_weight, run_items=run_items, run_bytes=run_bytes,
                                            temp_dir=temp_dir):
        places.append(place)
        line_digests.append(digest)
    return Merged(MergedRecords(latest, places, line_digests), latest.superseded, foreign, warnings)


def _replace_with(out: Path, write: Any) -> None:
    """Write through `write(temp_path)`, then put the file in `out`'s place whole (atomic_files)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as temp:
        write(temp)


def write_jsonl(records: Iterable[dict[str, Any]], out: str | Path) -> None:
    """The records as one JSONL file (the writer's own line encoding)."""
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            for record in records:
                handle.write(encode_record(record))

    _replace_with(Path(out), write)


def write_merged(records: Iterable[dict[str, Any]], out: str | Path, fmt: MergeFormat = "jsonl") -> None:
    """Write merged records in `fmt`."""
    if fmt not in MERGE_FORMATS:
        raise Vl2Error(f"format: {fmt!r} is not one of {', '.join(MERGE_FORMATS)}")
    (write_parquet if fmt == "parquet" else write_jsonl)(records, out)
