"""The one reader of outputs: a hostile or damaged line is skipped, counted and named by every reader
(resume, dry run, report, merge, shards), never a traceback, and the records around it still count."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import REPO_ROOT, reference_root
from vl2cli.output import FileStamp, JsonlWriter, Request, ResumeIndex, build_record, load_schema, resume_key
from vl2cli.output.merge import latest_records
from vl2cli.output.reader import MAX_LINE_BYTES, SkippedLines, read_records
from vl2cli.output.schema import record_problem

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")
AV_FIXTURE = "siglip-qwen2-av"
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"


def _good(path: Path, **changes) -> dict:
    stamp = FileStamp.of(path)
    record = build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="0", output="a cat", modality="video")
    record.update(changes)
    return record


def _hostile(media: Path) -> list[bytes]:
    """Lines a hostile tester planted: each parses (or not) but none is a record."""
    good = _good(media)
    line = lambda **changes: json.dumps({**good, **changes}).encode()  # noqa: E731
    return [
        line(error="boom"),                                     # an error that is a string
        line(file=[1, 2]),                                      # a list where an object belongs
        b"[" * 5000 + b"]" * 5000,                              # 5,000 levels of nesting
        line(media={"kind": "video", "has_video": True, "has_audio": False, "x": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}),
        line(segment={"index": 0, "start_s": "zero", "end_s": 1, "count": 1, "by": "60s"}),  # non-numeric times
        line(segment={"index": 0, "start_s": 0, "end_s": 1, "count": 1, "by": "60s"}).replace(b'"end_s": 1', b'"end_s": NaN'),
        line(schema_version=4),                                 # another schema version
        line(schema_version=2),                                 # a v2 record with v3's fields
        line(error={"code": "model_error", "message": "x", "attempt": "2"}),
        b'{"note": "a foreign object"}',
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"schema_version": 2, "path": "/cut',                  # a run killed mid-line
    ]


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123")
    return path


def _planted(tmp_path: Path, media: Path) -> tuple[Path, Path, list[bytes]]:
    other = tmp_path / "other.mp4"
    other.write_bytes(b"45678")
    out = tmp_path / "out.jsonl"
    hostile = _hostile(media)
    with JsonlWriter(out) as writer:
        writer.write(_good(media))
    with open(out, "ab") as handle:
        handle.write(b"\n".join(hostile) + b"\n")
    with JsonlWriter(out) as writer:
        writer.write(_good(other, error={"code": "corrupt_media", "message": "broken"}, output=None, modality=None))
    return out, other, hostile


def test_the_validator_agrees_with_jsonschema(tmp_path: Path, media: Path) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    values = [json.loads(line) for line in _hostile(media)[:-4] if not line.startswith(b"[[") and b'"x"' not in line]
    values += [_good(media), _good(media, error={"code": "x", "message": "y", "attempt": 1}, output=None),
               _good(media, output=None), _good(media, schema_version=1), _good(media, schema_version=True),
               _good(media, frames=1.5), _good(media, frames=0), _good(media, labels=["a", 1]), {"note": 1}, [1]]
    for value in values:
        assert (record_problem(value) is None) == validator.is_valid(value), (value, record_problem(value))
    assert record_problem(_good(media, error="boom")) == "record.error: expected object or null, got string"


def test_resume_skips_every_hostile_line_and_names_them(tmp_path: Path, media: Path) -> None:
    out, other, hostile = _planted(tmp_path, media)
    index = ResumeIndex.from_output(out)
    assert index.is_done(resume_key(FileStamp.of(media), REQUEST))
    assert index.is_done(resume_key(FileStamp.of(other), REQUEST)) and index.still_failed() == 1
    assert [line.number for line in index.skipped.lines] == list(range(2, 2 + len(hostile)))
    warning = index.skipped.describe(out)
    assert f"skipped {len(hostile)} line(s) that are not vl2 records (line 2, 3, 4, 5, 6 and {len(hostile) - 5} more" \
        in warning and "record.error: expected object or null" in warning
    reasons = {line.number: line.reason for line in index.skipped.lines}
    assert reasons[4] == "nested too deep" and reasons[5] == "record.media.x: nested too deep"
    assert "not JSON" in reasons[7]  # NaN is not JSON


def test_a_line_longer_than_the_bound_is_skipped_without_reading_it_whole(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "out.jsonl"
    with open(out, "wb") as handle:
        handle.write(b'{"output": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n')
        handle.write(json.dumps(_good(media)).encode() + b"\n")
    skipped = SkippedLines()
    assert [r["output"] for r in read_records(out, on_skipped=skipped)] == ["a cat"]
    assert [(line.number, line.reason) for line in skipped.lines] == [(1, f"longer than {MAX_LINE_BYTES} bytes")]


def test_merge_report_and_shards_read_past_hostile_lines(tmp_path: Path, media: Path) -> None:
    from vl2cli.report.page import build_report
    from vl2cli.commands.shard_commands import merge_shards, shards_report

    out, other, hostile = _planted(tmp_path, media)
    merged = latest_records([out])
    assert [r["path"] for r in merged.records] == [str(media), str(other)] and merged.foreign == len(hostile)
    assert len(merged.warnings) == 1 and "line 2, 3, 4, 5, 6" in merged.warnings[0]
    warnings: list[str] = []
    html = build_report(out, max_sheets=0, on_warning=warnings.append)
    assert "vl2 report" in html and len(warnings) == 1 and f"skipped {len(hostile)} line(s)" in warnings[0]
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "shards.json").write_text(json.dumps({"shards": 1, "array_min": 0}))
    (folder / "part-0-of-1.jsonl").write_bytes(out.read_bytes())
    listing = io.StringIO()
    assert shards_report(folder, stdout=listing) == 1
    assert f"incomplete (2 records, {len(hostile)} line(s) not vl2 records, skipped, no completion marker" \
        in listing.getvalue(), listing.getvalue()
    stderr = io.StringIO()
    assert merge_shards(folder, tmp_path / "all.jsonl", stderr=stderr) == 1
    assert "merged 2 records" in stderr.getvalue() and "not vl2 records" in stderr.getvalue()
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == 2


@needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO,))
def test_a_dry_run_over_a_hostile_output_warns_and_plans(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes((MEDIA_FIXTURES / TINY_VIDEO).read_bytes())
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"\n".join(_hostile(clip)) + b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VL2_") or k in ("VL2_HOME", "VL2_EXPORT_DIR")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_CACHE=str(reference_root() / AV_FIXTURE / "hub"), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "vl2cli.cli", "caption", str(clip), "--out", str(out), "--dry-run",
                          "--model", str(reference_root() / AV_FIXTURE / "checkpoint")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.splitlines() == [f"process {clip}"]
    assert f"skipped {len(_hostile(clip))} line(s) that are not vl2 records" in run.stderr


@pytest.mark.timeout(60)
def test_an_output_that_is_not_a_regular_file_is_not_read_back(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: reading it would wait forever
    assert list(read_records(fifo)) == [] and len(ResumeIndex.from_output(fifo)) == 0
    assert list(read_records("/dev/null")) == []
