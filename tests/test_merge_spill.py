"""`vl2 merge` in bounded memory: the walk-order sort spills sorted runs to a temporary folder (and
always removes it), Parquet is written a row group at a time under one unified schema, and both give
the very output the all-in-memory paths gave."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from vl2cli.errors import Vl2Error
from vl2cli.output.merge import latest_records, write_merged
from vl2cli.output.record import printable
from vl2cli.output.spill_sort import MAX_FAN_IN, spilling_sorted


def _record(path: str, output: str | None, *, frames: int = 8, error: str | None = None,
            media: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema_version": 1, "path": path, "file": {"size_bytes": 1, "mtime_ns": 2}, "media": media,
            "task": "caption", "prompt": None, "instruction": "i", "labels": None,
            "model": {"id": "m", "revision": None}, "frames": frames, "modality_requested": "auto",
            "modality": "image", "audio_missing": False, "notes": [], "output": output, "label_scores": None,
            "top_k": None, "timings_ms": {"decode": 1.5, "model": None, "total": None},
            "error": {"code": error, "message": "m", "attempt": 1} if error else None, "vl2_version": "0",
            "created_at": "t"}


def _outputs(tmp_path: Path) -> list[Path]:
    """Two outputs of 50 records in shuffled order: nested folders beside same-prefix files, two
    requests for some paths, and records of the first output superseded by the second."""
    names = [f"/r/d{i % 3}/c{i:02d}.png" for i in range(30)] + [f"/r/d{i}.png" for i in range(3)]
    records = [_record(name, f"o{n}") for n, name in enumerate(names)]
    records += [_record(name, "more frames", frames=16) for name in names[:12]]
    rng = random.Random(5)
    rng.shuffle(records)
    later = [{**record, "output": "again"} for record in records[:5]]
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in records[:40]))
    second.write_text("".join(json.dumps(r) + "\n" for r in records[40:] + later))
    return [first, second]


def test_the_spilling_sort_is_sorted_across_many_runs_and_leaves_no_files(tmp_path: Path) -> None:
    items = [(random.Random(n).random(), f"s{n % 17}", n) for n in range(500)]
    spill = tmp_path / "spill"
    spill.mkdir()
    assert list(spilling_sorted(items, run_items=7, temp_dir=spill)) == sorted(items)
    assert len(items) > MAX_FAN_IN  # one item a run: more runs than are merged at once, so two rounds
    assert list(spilling_sorted(items, run_items=1, temp_dir=spill)) == sorted(items)
    assert list(spilling_sorted(items, weigh=lambda item: 10, run_bytes=100, temp_dir=spill)) == sorted(items)
    assert list(spill.iterdir()) == []


def test_the_spill_folder_exists_only_while_sorting_and_goes_on_early_close_and_errors(tmp_path: Path) -> None:
    items = list(range(100, 0, -1))
    small = spilling_sorted(items, temp_dir=tmp_path)
    assert next(small) == 1 and list(tmp_path.iterdir()) == []  # one run: nothing written
    small.close()
    sorting = spilling_sorted(items, run_items=10, temp_dir=tmp_path)
    assert next(sorting) == 1
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("vl2-sort-") and len(list(folder.iterdir())) == 10
    sorting.close()  # a consumer that stops early
    assert list(tmp_path.iterdir()) == []

    def failing() -> Any:
        yield from items[:50]
        raise OSError("the input went away")

    with pytest.raises(OSError, match="went away"):
        list(spilling_sorted(failing(), run_items=10, temp_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_merge_sorted_in_many_runs_is_the_in_memory_merge_byte_for_byte(tmp_path: Path) -> None:
    outputs = _outputs(tmp_path)
    spill = tmp_path / "spill"
    spill.mkdir()
    whole = latest_records(outputs)
    runs = latest_records(outputs, temp_dir=spill, run_items=4)
    assert len(runs.records) == len(whole.records) == 45 and runs.superseded == whole.superseded == 5
    assert list(runs.records) == list(whole.records) and runs.records[3] == whole.records[3]
    paths = [record["path"] for record in whole.records]
    assert paths.index("/r/d0/c00.png") < paths.index("/r/d0.png")  # a folder's files before its namesake
    write_merged(whole.records, tmp_path / "whole.jsonl")
    write_merged(runs.records, tmp_path / "runs.jsonl")
    assert (tmp_path / "runs.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert list(spill.iterdir()) == []


def test_parquet_in_row_groups_reads_back_as_the_whole_table_wrote_it(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from vl2cli.output.parquet import write_parquet

    merged = latest_records(_outputs(tmp_path))
    write_parquet(merged.records, tmp_path / "m.parquet", batch_rows=7)
    assert pq.ParquetFile(tmp_path / "m.parquet").metadata.num_row_groups == 7  # 45 records, 7 a group
    readback = pq.read_table(tmp_path / "m.parquet")
    whole = pa.Table.from_pylist([printable(record) for record in merged.records])
    assert readback.schema.equals(whole.schema) and readback.to_pylist() == whole.to_pylist()
    assert readback.to_pylist() == [printable(record) for record in merged.records]


def test_parquet_batches_unify_a_null_field_with_later_text_and_structs(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from vl2cli.output.parquet import write_parquet

    records = [_record(f"/r/{n:02d}.png", None) for n in range(10)]  # output and error null, no media
    records += [_record("/r/10.png", None, media={"width": 4, "tags": []}),  # all in the first batch
                _record("/r/11.png", "text", error="model_error", media={"width": 4.5, "tags": ["x"], "codec": "h"})]
    write_parquet(records, tmp_path / "m.parquet", batch_rows=11)
    table = pq.read_table(tmp_path / "m.parquet")
    assert table.schema.field("output").type == pa.string() and table.schema.field("error").type.num_fields == 3
    media = table.schema.field("media").type  # int widened to float, an empty list typed, a field gained
    assert [media.field(i).name for i in range(media.num_fields)] == ["width", "tags", "codec"]
    assert media.field("width").type == pa.float64() and media.field("tags").type.value_type == pa.string()
    expected = [{**record, "media": {"width": None, "tags": None, "codec": None, **record["media"]}}
                if record["media"] else record for record in records]
    assert table.to_pylist() == expected
    # a column that only later records have is kept (the whole table's inference kept the first's)
    write_parquet([{"a": 1}, {"a": 2, "b": "late"}], tmp_path / "late.parquet", batch_rows=1)
    assert pq.read_table(tmp_path / "late.parquet").to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "late"}]
    write_parquet(iter([]), tmp_path / "none.parquet")
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def test_parquet_batches_that_do_not_unify_are_the_one_table_error_and_leave_no_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    records = [_record(f"/r/{n}.png", "t", media={"extra": 1}) for n in range(3)]
    records.append(_record("/r/9.png", "t", media={"extra": {"nested": "text"}}))
    from vl2cli.output.parquet import write_parquet

    with pytest.raises(Vl2Error, match="do not fit one Parquet table.*merge to JSONL instead"):
        write_parquet(records, tmp_path / "all.parquet", batch_rows=2)
    assert list(tmp_path.iterdir()) == []
