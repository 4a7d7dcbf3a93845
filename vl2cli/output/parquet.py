"""Records as one Parquet file, written in row groups of bounded size (needs pyarrow).

One table for every record would hold them all in memory. Instead the records are read twice: a first
pass infers each batch's column types as `pa.Table.from_pylist` would for the whole table and unifies
them (`pa.unify_schemas`, permissive: null widens to any type, int to float, structs gain the fields
of later batches); a second pass writes each batch under that one schema (`ParquetWriter`). Records
whose fields do not fit one schema (a number here, text there) are the same error as for one table.
The columns are every field any record has, in order of first appearance (`from_pylist` over one table
took the first record's fields only: a field that only later records have, such as a newer schema
version's, was dropped).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..atomic_files import replacing
from ..errors import Vl2Error
from .record import printable

#: Records per row group: what one batch holds in memory as Python data and as Arrow arrays.
BATCH_ROWS = 10_000


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise Vl2Error("Parquet output needs pyarrow, which is not installed: pip install 'vl2[parquet]'") from None
    return pa, pq


def _batches(records: Iterable[dict[str, Any]], rows: int) -> Iterator[list[dict[str, Any]]]:
    """The records made printable (Parquet strings are UTF-8: a non-UTF-8 file name's bytes are kept
    visible as \\xNN escapes), `rows` at a time."""
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(printable(record))
        if len(batch) >= rows:
            yield batch
            batch = []
    if batch:
        yield batch


def _schema(pa: Any, records: Iterable[dict[str, Any]], rows: int) -> Any:
    """The one schema of all batches: columns in order of first appearance, each column's type the
    unification of the types inferred per batch (as the whole table's inference would give them)."""
    names: dict[str, None] = {}
    schema = pa.schema([])
    for batch in _batches(records, rows):
        for record in batch:
            names.update(dict.fromkeys(record))
        batch_schema = pa.schema([pa.field(name, pa.array([record.get(name) for record in batch]).type)
                                  for name in names])
        schema = pa.unify_schemas([schema, batch_schema], promote_options="permissive")
    return schema


def write_parquet(records: Iterable[dict[str, Any]], out: str | Path, *, batch_rows: int = BATCH_ROWS) -> None:
    """The records as one Parquet file: one row per record, nested objects as structs, a row group per
    `batch_rows` records. `records` is read twice (a sequence, or a MergedRecords that reads its
    records back from their outputs); a one-shot iterator is held in memory first."""
    pa, pq = _pyarrow()
    if iter(records) is records:
        records = list(records)
    out = Path(out)
    try:
        schema = _schema(pa, records, batch_rows)
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as temp, pq.ParquetWriter(temp, schema) as writer:
            for batch in _batches(records, batch_rows):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    except (pa.ArrowException, ValueError, TypeError) as exc:  # e.g. one field a number here, text there
        raise Vl2Error(f"the records do not fit one Parquet table ({exc}); merge to JSONL instead") from None
