"""The latest record per key (output/latest.py): a record read back is parsed without a second schema check
only while its line is byte for byte the one the scan checked; a line changed in between is checked again."""
from __future__ import annotations

import json
from pathlib import Path

from vl2cli.output import Request, build_record
from vl2cli.output.latest import LatestRecords
from vl2cli.output.merge import latest_records
from vl2cli.output.reader import decode_line

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")


def _record(name: str, output: str) -> dict:
    return build_record(REQUEST, path=f"/clips/{name}.mp4", stamp=None, vl2_version="0", output=output,
                        modality="video")


def _write(out: Path, records: list[dict]) -> None:
    out.write_text("".join(json.dumps(record) + "\n" for record in records))


def _replace_in_place(out: Path, old: bytes, new: bytes) -> None:
    """The same bytes but `old` replaced by `new` (same length: every record keeps its offset)."""
    assert len(old) == len(new)
    data = out.read_bytes()
    assert data.count(old) == 1
    out.write_bytes(data.replace(old, new))


def test_the_latest_record_of_each_key_in_order_of_first_appearance(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_record("a", "first a"), _record("b", "only b"), _record("a", "second a")])
    latest = LatestRecords.scan([out])
    assert [record["output"] for record in latest] == ["second a", "only b"]
    assert (latest.read, len(latest), latest.superseded) == (3, 2, 1)


def test_a_line_made_invalid_after_the_scan_is_left_out(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_record("a", "kept"), _record("b", "spoilt")])
    latest = LatestRecords.scan([out])
    _replace_in_place(out, b'"notes": [], "output": "spoilt"', b'"notes": {}, "output": "spoilt"')
    # still JSON, no longer a record (notes must be a list): only a second check can tell
    assert json.loads(out.read_text().splitlines()[1])["notes"] == {}
    assert [record["output"] for record in latest] == ["kept"]


def test_a_line_changed_to_another_record_after_the_scan_is_read_as_it_is_now(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_record("a", "before"), _record("b", "same")])
    latest = LatestRecords.scan([out])
    _replace_in_place(out, b'"output": "before"', b'"output": "after!"')
    assert [record["output"] for record in latest] == ["after!", "same"]


def test_a_merge_reads_back_unchanged_lines_and_checks_changed_ones(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_record("a", "one"), _record("b", "two"), _record("c", "six")])
    merged = latest_records([out])
    _replace_in_place(out, b'"notes": [], "output": "two"', b'"notes": {}, "output": "two"')  # no longer a record
    _replace_in_place(out, b'"output": "six"', b'"output": "ten"')  # another record now
    assert [record["output"] for record in merged.records] == ["one", "ten"]


def test_decode_line_bounds_integers_as_the_checked_read_does() -> None:
    assert decode_line(b'{"n": 12345678901234567890}') == {"n": 12345678901234567890}
    assert decode_line(b'{"s": "123456789012345678901"}') == {"s": "123456789012345678901"}  # digits, no integer
    for raw in (b'{"n": 123456789012345678901}', b'{"n": NaN}', b'{"n": 1} x'):
        try:
            decode_line(raw)
        except ValueError:
            continue
        raise AssertionError(f"{raw!r} was read")
    assert decode_line('{"s": "é"}'.encode("utf-16")) == {"s": "é"}  # encoding detected, as json.loads does
