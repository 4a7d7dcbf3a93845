"""The resume index's sidecar (`<output>.index`): trusted only while it matches the output byte for byte
where it says it does; stale, damaged or foreign ones are rebuilt from the JSONL, which stays the truth."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vl2cli.output import FileStamp, JsonlWriter, Request, ResumeIndex, build_record, resume_key
from vl2cli.output.index_file import index_path_for
from vl2cli.output.resume import MAX_ATTEMPTS
from vl2cli.discover import iter_media_paths

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")
FILES = 6


@pytest.fixture()
def clips(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = []
    for number in range(FILES):
        path = folder / f"c{number}.mp4"
        path.write_bytes(b"x" * (number + 1))
        paths.append(path)
    return paths


def _record(path: Path, **kw) -> dict:
    stamp = FileStamp.of(path)
    return build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="0", **kw)


def _done(path: Path, number: int) -> dict:
    if number % 3 == 1:
        return _record(path, error={"code": "decode_timeout", "message": "slow", "attempt": 1})
    if number % 3 == 2:
        return _record(path, error={"code": "corrupt_media", "message": "broken", "attempt": 1})
    return _record(path, output=f"clip {number}", modality="video")


def _write(out: Path, records: list[dict]) -> None:
    with JsonlWriter(out) as writer:
        for record in records:
            writer.write(record)


def _answers(index: ResumeIndex, clips: list[Path]) -> list[tuple]:
    keys = [resume_key(FileStamp.of(path), REQUEST) for path in clips]
    return [(index.is_done(key), index.is_done(key, retry_failed=True), index.next_attempt(key)) for key in keys] + [
        (index.still_failed(), len(index), len(index.skipped))]


def _from_reader_alone(out: Path) -> ResumeIndex:
    """The index as the validating reader alone gives it (no sidecar read or written)."""
    index = ResumeIndex()
    from vl2cli.output.reader import read_records

    for record in read_records(out, on_skipped=index.skipped):
        index.add(record)
    return index


def test_the_sidecar_gives_the_same_answers_as_reading_the_output(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(path, n) for n, path in enumerate(clips[:4])])
    with open(out, "ab") as handle:
        handle.write(b'{"schema_version": 2, "path": 7}\n')  # a hostile line: skipped, and the warning kept
    first = ResumeIndex.from_output(out, keep=True)
    assert index_path_for(out).is_file()
    again = ResumeIndex.from_output(out)
    expected = _answers(_from_reader_alone(out), clips)
    assert _answers(first, clips) == _answers(again, clips) == expected
    assert expected[-1] == (2, 4, 1)
    assert again.skipped.describe(out) == _from_reader_alone(out).skipped.describe(out)


def test_without_keep_the_sidecar_is_neither_written_nor_needed(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(clips[0], 0)])
    assert ResumeIndex.from_output(out).is_done(resume_key(FileStamp.of(clips[0]), REQUEST))
    assert not index_path_for(out).exists()  # a dry run holds no lock: it leaves the sidecar alone


def test_lines_another_writer_appended_are_read_on_from_the_sidecar(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(path, n) for n, path in enumerate(clips[:3])])
    ResumeIndex.from_output(out, keep=True)
    before = index_path_for(out).read_bytes()
    # appended without the index's knowledge (a run of an older vl2, a crash before the sidecar was saved)
    _write(out, [_done(clips[3], 3), _record(clips[0], error={"code": "corrupt_media", "message": "now broken"})])
    with open(out, "ab") as handle:
        handle.write(b"not json\n")
    index = ResumeIndex.from_output(out, keep=True)
    assert _answers(index, clips) == _answers(_from_reader_alone(out), clips)
    assert index.still_failed() == 3 and len(index.skipped) == 1
    assert index_path_for(out).read_bytes() != before  # caught up and written again
    assert _answers(ResumeIndex.from_output(out), clips) == _answers(index, clips)


@pytest.mark.parametrize("change", ["truncated", "replaced", "rewritten in place", "cut and regrown"])
def test_an_output_changed_under_the_sidecar_is_read_again(tmp_path: Path, clips: list[Path], change: str) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(path, n) for n, path in enumerate(clips[:4])])
    ResumeIndex.from_output(out, keep=True)
    lines = out.read_bytes().splitlines(keepends=True)
    if change == "truncated":
        out.write_bytes(b"".join(lines[:2]))
    elif change == "replaced":  # an editor's copy renamed over: another inode
        copy = tmp_path / "copy.jsonl"
        copy.write_bytes(b"".join(lines[:1] + lines[2:]))
        os.replace(copy, out)
    elif change == "rewritten in place":  # same inode, same size, other bytes before the covered end
        data = bytearray(out.read_bytes())
        data[len(lines[0]) + 5:len(lines[0]) + 9] = b"XXXX"
        with open(out, "r+b") as handle:
            handle.write(bytes(data))
    else:  # truncated, then appended to past the old size
        out.write_bytes(b"".join(lines[:1]))
        _write(out, [_done(clips[5], 5)] * 5)
    index = ResumeIndex.from_output(out, keep=True)
    assert _answers(index, clips) == _answers(_from_reader_alone(out), clips)
    assert _answers(ResumeIndex.from_output(out), clips) == _answers(index, clips)


@pytest.mark.parametrize("damage", ["flipped byte", "cut short", "empty", "foreign", "header only"])
def test_a_garbled_sidecar_is_rebuilt_never_trusted(tmp_path: Path, clips: list[Path], damage: str) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(path, n) for n, path in enumerate(clips[:4])])
    ResumeIndex.from_output(out, keep=True)
    sidecar = index_path_for(out)
    data = bytearray(sidecar.read_bytes())
    if damage == "flipped byte":
        data[-3] ^= 0xFF  # inside the last entry: its digest or state
    elif damage == "cut short":
        data = data[:-7]
    elif damage == "empty":
        data = bytearray()
    elif damage == "foreign":
        data = bytearray(b'{"not": "an index"}\n')
    else:
        data = data[:data.index(b"}") + 1]
    sidecar.write_bytes(bytes(data))
    index = ResumeIndex.from_output(out, keep=True)
    assert _answers(index, clips) == _answers(_from_reader_alone(out), clips)
    assert sidecar.read_bytes() != bytes(data)  # rebuilt


def test_a_run_saves_what_it_appended_read_back_from_the_output(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    _write(out, [_done(clips[0], 0)])
    index = ResumeIndex.from_output(out, keep=True)
    unwritten = _record(clips[1], output="never written", modality="video")
    index.add(unwritten)  # taken into account in memory, then the write failed: not in the output
    written = _done(clips[2], 2)
    index.add(written)
    _write(out, [written])
    index.save()
    again = ResumeIndex.from_output(out)
    assert _answers(again, clips) == _answers(_from_reader_alone(out), clips)
    assert not again.is_done(resume_key(FileStamp.of(clips[1]), REQUEST))


def test_transient_attempts_survive_the_sidecar(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    key = resume_key(FileStamp.of(clips[0]), REQUEST)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        index = ResumeIndex.from_output(out, keep=True)
        assert not index.is_done(key) and index.next_attempt(key) == attempt
        _write(out, [_record(clips[0], error={"code": "model_error", "message": "oom", "attempt": attempt})])
        index.save()
    assert ResumeIndex.from_output(out).is_done(key)


def test_segments_survive_the_sidecar(tmp_path: Path, clips: list[Path]) -> None:
    out = tmp_path / "out.jsonl"
    segments = [{"index": i, "start_s": 60.0 * i, "end_s": 60.0 * (i + 1), "count": 2, "by": "60s"} for i in range(2)]
    _write(out, [_record(clips[0], output=f"part {s['index']}", modality="video", segment=s) for s in segments])
    ResumeIndex.from_output(out, keep=True)
    index = ResumeIndex.from_output(out)
    key = resume_key(FileStamp.of(clips[0]), REQUEST)
    assert index.known_segments(key, "60s") == segments
    assert all(index.is_done(resume_key(FileStamp.of(clips[0]), REQUEST, s)) for s in segments)
    assert not index.is_done(key)


def test_done_files_come_as_runs_of_paths_in_walk_order_and_the_rest_as_before(tmp_path: Path, monkeypatch) -> None:
    """A rerun's done files cost a stat and a lookup: one SkippedFiles per run of them (issue 25), each
    at most SKIPPED_RUN_FILES long, between the files that need work, in the walk's order."""
    from vl2cli.tasks import plan
    from vl2cli.tasks.plan import PlannedFile, SkippedFiles, plan_files

    monkeypatch.setattr(plan, "SKIPPED_RUN_FILES", 2)
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = [folder / f"c{number}.mp4" for number in range(6)]
    for path in paths:
        path.write_bytes(b"x")
    done = {resume_key(FileStamp.of(path), REQUEST) for path in paths if path.name != "c3.mp4"}
    walked = list(iter_media_paths([folder]))
    gone = folder / "gone.mp4"  # unreadable: an error entry of its own, after the run before it
    assert all(isinstance(p, str) for p in walked) and walked == [str(p) for p in paths]  # no Path per file
    entries = list(plan_files([*paths[:4], gone, *paths[4:]], REQUEST, done.__contains__, skipped_runs=True))
    shapes = [("skipped", [os.path.basename(p) for p in e.paths]) if isinstance(e, SkippedFiles)
              else ("pending" if e.pending else "error", [e.path.name]) for e in entries]
    assert shapes == [("skipped", ["c0.mp4", "c1.mp4"]), ("skipped", ["c2.mp4"]), ("pending", ["c3.mp4"]),
                      ("error", ["gone.mp4"]), ("skipped", ["c4.mp4", "c5.mp4"])]
    assert all(e.outcome is e and not e.pending for e in entries if isinstance(e, SkippedFiles))
    # without skipped_runs (the public plan_run's default), a PlannedFile per done file, as documented
    each = list(plan_files(paths, REQUEST, done.__contains__))
    assert all(isinstance(e, PlannedFile) for e in each) and [e.outcome.skipped for e in each if not e.pending] == [True] * 5
