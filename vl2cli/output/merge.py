"""Merge JSONL outputs (e.g. the part files of a sharded run) into one file: the record that resume
would take for each key — the last one — once, as JSONL or Parquet.

The merged file is a new, derived file: it is written whole to a temporary name and renamed over
`out`, so a reader never sees half of it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

from ..atomic_files import replacing
from ..errors import Vl2Error
from .record import ResumeKey, key_of_record, printable
from .reader import SkippedLines, read_records
from .writer import encode_record

MergeFormat = Literal["jsonl", "parquet"]
MERGE_FORMATS: tuple[MergeFormat, ...] = ("jsonl", "parquet")


@dataclass
class Merged:
    """The records kept (one per resume key, ordered by path) and how many lines were not records
    (`warnings`: one line per input file that had some, naming them)."""

    records: list[dict[str, Any]]
    superseded: int
    foreign: int
    warnings: list[str] = field(default_factory=list)


def latest_records(paths: Iterable[str | Path]) -> Merged:
    """The last record per resume key over `paths` read in order, as `ResumeIndex` reads an output.

    Order: by path, component by component — the order a walk of one folder gives (names sorted per
    folder, depth first) — then by the rest of the key, so equal inputs always merge to equal bytes.
    """
    latest: dict[ResumeKey, dict[str, Any]] = {}
    seen = foreign = 0
    warnings = []
    for path in paths:
        skipped = SkippedLines()
        for record in read_records(path, on_skipped=skipped):
            key = key_of_record(record)  # every record the reader passes has one (file: null ones too)
            if key is None:
                foreign += 1
                continue
            seen += 1
            latest[key] = record
        foreign += len(skipped)
        if (warning := skipped.describe(path)) is not None:
            warnings.append(warning)
    ordered = sorted(latest.items(), key=lambda item: (PurePath(item[0][0]).parts, repr(item[0][1:])))
    return Merged([record for _, record in ordered], seen - len(latest), foreign, warnings)


def _replace_with(out: Path, write: Any) -> None:
    """Write through `write(temp_path)`, then put the file in `out`'s place whole (atomic_files)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with replacing(out) as temp:
        write(temp)


def write_jsonl(records: list[dict[str, Any]], out: str | Path) -> None:
    """The records as one JSONL file (the writer's own line encoding)."""
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            for record in records:
                handle.write(encode_record(record))

    _replace_with(Path(out), write)


def write_parquet(records: list[dict[str, Any]], out: str | Path) -> None:
    """The records as one Parquet table: one row per record, nested objects as structs (needs pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Vl2Error("Parquet output needs pyarrow, which is not installed: pip install 'vl2[parquet]'") from None
    # Parquet strings are UTF-8: a non-UTF-8 file name's bytes are kept visible as \xNN escapes
    try:
        table = pa.Table.from_pylist([printable(record) for record in records])
    except (pa.ArrowException, ValueError, TypeError) as exc:  # e.g. one field a number here, text there
        raise Vl2Error(f"the records do not fit one Parquet table ({exc}); merge to JSONL instead") from None
    _replace_with(Path(out), lambda temp: pq.write_table(table, temp))


def write_merged(records: list[dict[str, Any]], out: str | Path, fmt: MergeFormat = "jsonl") -> None:
    """Write merged records in `fmt`."""
    if fmt not in MERGE_FORMATS:
        raise Vl2Error(f"format: {fmt!r} is not one of {', '.join(MERGE_FORMATS)}")
    (write_parquet if fmt == "parquet" else write_jsonl)(records, out)
