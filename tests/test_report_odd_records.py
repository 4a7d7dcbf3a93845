"""`vl2 report` and `vl2 merge` render any record vl2 can write: frames of extreme shapes, file names
that are not UTF-8, every error kind, files that could not be stat'ed."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from media_helpers.synth import write_video
from vl2cli.output import FileStamp, JsonlWriter, Request, build_record
from vl2cli.output.merge import latest_records, write_merged
from vl2cli.report.page import build_report, write_report

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")
MEDIA = {"kind": "video", "has_video": True, "has_audio": False}


def _record(path: Path, **fields) -> dict:
    stamp = FileStamp.of(path) if os.path.lexists(path) else None
    return build_record(REQUEST, path=str(path), stamp=stamp, vl2_version="0", **fields)


def test_a_report_of_extreme_frame_shapes_draws_every_row(tmp_path: Path) -> None:
    wide_image = tmp_path / "wide.png"
    Image.fromarray(np.full((3, 4097, 3), 200, dtype=np.uint8)).save(wide_image)
    tall_image = tmp_path / "tall.png"
    Image.fromarray(np.full((4097, 3, 3), 90, dtype=np.uint8)).save(tall_image)
    wide_video = write_video(tmp_path / "wide.mp4", width=4098, height=4, frames=4)
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(wide_image, output="a line", modality="image", media={**MEDIA, "kind": "image"}))
        writer.write(_record(tall_image, output="a post", modality="image", media={**MEDIA, "kind": "image"}))
        writer.write(_record(wide_video, output="a strip", modality="video", media=MEDIA))
    html = build_report(out)
    assert html.count("data:image/jpeg;base64,") == 3, "every row gets its frames"


def test_a_file_name_that_is_not_utf8_is_reported_and_merged_to_parquet(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/clip-\xff\xfe.png"
    Image.fromarray(np.full((8, 8, 3), 10, dtype=np.uint8)).save(raw)
    odd = Path(os.fsdecode(raw))
    gone = Path(os.fsdecode(os.fsencode(tmp_path) + b"/gone-\xe9.mp4"))
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:  # as vl2 writes them: the name's bytes as \udcXX escapes
        writer.write(_record(odd, output="dark", modality="image", media={**MEDIA, "kind": "image"}))
        writer.write(_record(gone, error={"code": "unreadable_file", "message": f"{gone}: cannot read (No such file)"}))
        for code in ("decode_timeout", "decoder_crash", "model_error", "worker_lost", "corrupt_media"):
            other = tmp_path / f"{code}.mp4"
            other.write_bytes(b"x")
            writer.write(_record(other, error={"code": code, "message": "failed", "attempt": 2}))
    report = write_report(out, tmp_path / "report.html")
    text = report.read_text(encoding="utf-8")  # valid UTF-8 throughout
    assert "clip-\\\\xff\\\\xfe.png" in text and "gone-\\\\xe9.mp4" in text
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    merged = latest_records([out])
    assert len(merged.records) == 7
    write_merged(merged.records, tmp_path / "all.parquet", "parquet")
    paths = pq.read_table(tmp_path / "all.parquet").column("path").to_pylist()
    assert str(tmp_path) + "/clip-\\xff\\xfe.png" in paths and len(paths) == 7
    write_merged(merged.records, tmp_path / "all.jsonl")  # JSONL keeps the very bytes
    assert os.fsencode(json.loads((tmp_path / "all.jsonl").read_text().splitlines()[0])["path"]) == raw


def test_a_report_takes_odd_but_valid_times_and_timings(tmp_path: Path) -> None:
    first, second = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for path in (first, second):
        path.write_bytes(b"x")
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write({**_record(first, error={"code": "corrupt_media", "message": "x"}),
                      "created_at": "2026-01-01T00:00:00", "timings_ms": {"decode": None, "model": None, "total": 1e308}})
        writer.write({**_record(second, error={"code": "corrupt_media", "message": "y"}),
                      "created_at": "2026-01-01T00:00:10+00:00"})
    html = build_report(out, max_sheets=0)
    summary = json.loads(html.split('"summary": ', 1)[1].split(', "page_size"', 1)[0])
    assert summary["failed"] == 2 and summary["span_s"] > 10.0 and summary["files_per_s"] >= 0


def test_extreme_numbers_in_valid_records_are_shown_or_skipped_never_a_crash(tmp_path: Path) -> None:
    from vl2cli.output import ResumeIndex
    from vl2cli.output.reader import SkippedLines, read_records
    from vl2cli.output.subtitles import subtitle_line, timestamp

    video = write_video(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "out.jsonl"
    far = {"index": 0, "start_s": 0, "end_s": 1e308, "count": 1, "by": "60s"}
    with JsonlWriter(out) as writer:
        writer.write({**_record(video, output="far", modality="video", media=MEDIA), "segment": far})
        writer.write({**_record(video, output="many", modality="video", media=MEDIA), "frames": 10**9})
    with open(out, "ab") as handle:  # an integer no float holds, where a segment bound is made a float
        handle.write(json.dumps({**_record(video, output="huge", modality="video", media=MEDIA),
                                 "segment": {**far, "start_s": 10**400}}).encode() + b"\n")
    skipped = SkippedLines()
    records = list(read_records(out, on_skipped=skipped))
    assert [r["output"] for r in records] == ["far", "many"] and "out of range" in skipped.lines[0].reason
    assert len(ResumeIndex.from_output(out)) == 2
    assert timestamp(1e308) == "99999:00:00.000" and subtitle_line(records[0]).startswith("[00:00:00.000 - 99999:")
    html = build_report(out)
    assert html.count("data:image/jpeg;base64,") == 2  # 10**9 frames asked: the sheet shows at most 512


def test_a_segment_count_past_belief_does_not_stop_resume(tmp_path: Path) -> None:
    from vl2cli.output import ResumeIndex, resume_key

    video = write_video(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "out.jsonl"
    segment = {"index": 0, "start_s": 0, "end_s": 1, "count": 10**18, "by": "60s"}
    with JsonlWriter(out) as writer:
        writer.write({**_record(video, output="one of many", modality="video", media=MEDIA), "segment": segment})
    index = ResumeIndex.from_output(out)
    assert index.known_segments(resume_key(FileStamp.of(video), REQUEST), "60s") is None


def test_records_that_do_not_fit_one_parquet_table_are_one_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from vl2cli.errors import Vl2Error

    video = write_video(tmp_path / "clip.mp4", frames=4)
    first = _record(video, output="a", modality="video", media={**MEDIA, "extra": 1})
    second = {**first, "media": {**MEDIA, "extra": {"nested": "text"}}}
    with pytest.raises(Vl2Error, match="do not fit one Parquet table.*merge to JSONL instead"):
        write_merged([first, second], tmp_path / "all.parquet", "parquet")


def test_a_hostile_path_is_no_markup_in_the_page_and_its_link_is_percent_encoded(tmp_path: Path) -> None:
    hostile = tmp_path / '</script><script>alert(1)</script>"><img src=x onerror=alert(2)>.mp4'
    hostile.parent.mkdir(parents=True)  # its slashes make folders: a hostile path can be a real file too
    hostile.write_bytes(b"x")
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(hostile, output="</script>", modality="video", media=MEDIA, notes=["<!--"]))
        writer.write(_record(Path("relative/clip.mp4"), error={"code": "unreadable_file", "message": "gone"}))
    html = build_report(out, max_sheets=0)
    data = html.split('<script type="application/json" id="data">', 1)[1]
    assert "<" not in data.split("</script>", 1)[0]  # the data holds no markup: the first </script> is its own end
    assert "alert(1)</script>" not in html and "<img src=x" not in html
    rows = json.loads(data.split("</script>", 1)[0])["rows"]
    assert rows[0]["url"] == tmp_path.as_uri() + (
        "/%3C/script%3E%3Cscript%3Ealert%281%29%3C/script%3E%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%282%29%3E.mp4")
    assert "url" not in rows[1]  # not an absolute path: no link
