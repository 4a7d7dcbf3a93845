"""Output: record schema, append-only writer with crash repair, resume index and the run lock."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from vl2cli.errors import OutputLockedError
from vl2cli.output import (FileStamp, JsonlWriter, OutputLock, Request, ResumeIndex, build_record, load_schema,
                           read_records, resume_key)

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")


def _record(path: Path, request: Request = REQUEST, **kw) -> dict:
    stamp = FileStamp.of(path)
    return build_record(request, path=stamp.path, stamp=stamp, vl2_version="0", **kw)


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123")
    return path


def test_records_validate_against_the_shipped_schema(media: Path) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    good = _record(media, output="a cat", modality="video", instruction="Describe the video in detail.")
    validator.validate(good)
    failed = _record(media, error={"code": "corrupt_media", "message": "broken"})
    validator.validate(failed)
    classify = Request("classify", None, ("a", "b"), "m", None, 4, "auto")
    with pytest.raises(jsonschema.ValidationError):  # a success record must carry scores
        validator.validate(_record(media, classify, output="a", modality="video"))
    with pytest.raises(jsonschema.ValidationError):  # and a success record must carry an output
        validator.validate(_record(media, modality="video"))


def test_writer_appends_and_never_rewrites(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "o" / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(media, output="one", modality="video"))
    before = out.read_bytes()
    with JsonlWriter(out) as writer:
        assert not writer.repaired_partial_line
        writer.write(_record(media, output="two\nlines", modality="video"))
    after = out.read_bytes()
    assert after.startswith(before)
    assert [r["output"] for r in read_records(out)] == ["one", "two\nlines"]
    assert after.count(b"\n") == 2


def test_partial_last_line_is_terminated_not_rewritten(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(media, output="kept", modality="video"))
    with open(out, "ab") as handle:
        handle.write(b'{"schema_version": 1, "path": "/cut')
    damaged = out.read_bytes()
    with JsonlWriter(out) as writer:
        assert writer.repaired_partial_line
        writer.write(_record(media, output="next", modality="video"))
    assert out.read_bytes().startswith(damaged + b"\n")
    assert [r["output"] for r in read_records(out)] == ["kept", "next"]


def test_stdout_writer(media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    JsonlWriter("-").write(_record(media, output="x", modality="video"))
    assert json.loads(capsys.readouterr().out)["output"] == "x"


def test_resume_index_keys_and_latest_record_wins(tmp_path: Path, media: Path) -> None:
    out = tmp_path / "out.jsonl"
    other = Request("ask", "why?", None, "m", None, 4, "auto")
    with JsonlWriter(out) as writer:
        writer.write(_record(media, error={"code": "corrupt_media", "message": "x"}))
        writer.write(_record(media, other, output="because", modality="video"))
    index = ResumeIndex.from_output(out)
    key = resume_key(FileStamp.of(media), REQUEST)
    assert index.is_done(key) and not index.is_done(key, retry_failed=True)
    assert index.is_done(resume_key(FileStamp.of(media), other), retry_failed=True)
    for changed in (Request("caption", "p", None, "m", None, 4, "auto"), Request("caption", None, None, "m2", None, 4, "auto"),
                    Request("caption", None, None, "m", "v2", 4, "auto"), Request("caption", None, None, "m", None, 8, "auto"),
                    Request("caption", None, None, "m", None, 4, "video")):
        assert not index.is_done(resume_key(FileStamp.of(media), changed))
    with JsonlWriter(out) as writer:
        writer.write(_record(media, output="fixed", modality="video"))
    assert ResumeIndex.from_output(out).is_done(key, retry_failed=True)
    os.utime(media, ns=(0, 12345))
    assert not ResumeIndex.from_output(out).is_done(resume_key(FileStamp.of(media), REQUEST))
    assert len(ResumeIndex.from_output(tmp_path / "absent.jsonl")) == 0


def test_lock_refuses_a_second_holder_and_frees_on_release(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            OutputLock(out).acquire()
    with OutputLock(out):
        pass


def test_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from vl2cli.output import OutputLock; import sys, time; OutputLock({str(out)!r}).acquire();"
                               "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError):
            OutputLock(out).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with OutputLock(out):
        pass


def test_lock_is_keyed_on_the_real_file_not_its_spelling(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    alias = tmp_path / "alias.jsonl"
    alias.symlink_to(out)
    (tmp_path / "sub").mkdir()
    with OutputLock(out):
        for spelling in (alias, tmp_path / "sub" / ".." / "out.jsonl"):
            with pytest.raises(OutputLockedError):
                OutputLock(spelling).acquire()


def test_a_file_name_that_is_not_utf8_is_recorded_and_resumes(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/clip-\xff\xfe.mp4"
    with open(raw, "wb") as handle:
        handle.write(b"0123")
    path = Path(os.fsdecode(raw))
    other = tmp_path / "next.mp4"
    other.write_bytes(b"1")
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(path, output="x", modality="video"))
        writer.write(_record(other, output="y", modality="video"))  # the run goes on after it
    text = out.read_bytes().decode("utf-8")  # still valid UTF-8 throughout
    assert len(text.splitlines()) == 2
    index = ResumeIndex.from_output(out)
    assert index.is_done(resume_key(FileStamp.of(path), REQUEST), retry_failed=False)
    assert os.fsencode(next(iter(read_records(out)))["path"]) == raw


def test_transient_failures_are_retried_a_bounded_number_of_runs(tmp_path: Path, media: Path) -> None:
    from vl2cli.output.resume import MAX_ATTEMPTS

    key = resume_key(FileStamp.of(media), REQUEST)
    index = ResumeIndex()
    index.add(_record(media, error={"code": "corrupt_media", "message": "x", "attempt": 1}))
    assert index.is_done(key) and not index.is_done(key, retry_failed=True)  # permanent: done
    assert index.next_attempt(key) == 2  # a retried file's next error record counts that failure
    index = ResumeIndex()
    assert index.next_attempt(key) == 1  # never failed: a first attempt
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert index.next_attempt(key) == attempt
        index.add(_record(media, error={"code": "decode_timeout", "message": "slow", "attempt": attempt}))
        assert index.is_done(key) == (attempt >= MAX_ATTEMPTS), attempt
    assert index.next_attempt(key) == MAX_ATTEMPTS + 1 and index.still_failed() == 1
    index.add(_record(media))  # a later success wins
    assert index.is_done(key) and index.still_failed() == 0 and index.next_attempt(key) == 1
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        writer.write(_record(media, error={"code": "model_error", "message": "out of memory", "attempt": 1}))
    jsonschema.validate(next(iter(read_records(out))), load_schema())
    assert not ResumeIndex.from_output(out).is_done(key)


def test_lock_is_keyed_on_the_file_so_a_hard_link_meets_it(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("")
    (tmp_path / "elsewhere").mkdir()
    linked = tmp_path / "elsewhere" / "same.jsonl"
    os.link(out, linked)  # another name of the same file: another real path, the same inode
    with OutputLock(out):
        with pytest.raises(OutputLockedError, match="hard link"):
            OutputLock(linked).acquire()
    with OutputLock(linked):  # freed with the first run
        with pytest.raises(OutputLockedError):
            OutputLock(out).acquire()
    with OutputLock(tmp_path / "new" / "absent.jsonl"):  # an output not there yet is created and locked
        assert (tmp_path / "new" / "absent.jsonl").is_file()
    with OutputLock("/dev/null"):  # not a regular file: nothing to lock on it
        pass


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_the_writer_stops_when_its_path_no_longer_names_its_file(tmp_path: Path, media: Path, how: str) -> None:
    from vl2cli.errors import OutputReplacedError

    out = tmp_path / "out.jsonl"
    writer = JsonlWriter(out)
    writer.write(_record(media, output="one", modality="video"))
    first = out.read_bytes()
    os.link(out, tmp_path / "the-opened-file")
    if how == "replaced":  # what editors and sync tools do: write a copy, rename it over the original
        (tmp_path / "copy").write_bytes(first)
        os.replace(tmp_path / "copy", out)
    else:
        out.unlink()
    with pytest.raises(OutputReplacedError, match=f"{out} was replaced or removed while this run was writing it"):
        writer.write(_record(media, output="two", modality="video"))
    writer.close()
    assert (tmp_path / "the-opened-file").read_bytes() == first  # nothing went into the file no name reached
    assert not out.exists() or out.read_bytes() == first
