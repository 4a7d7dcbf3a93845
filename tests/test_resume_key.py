"""The typed resume key: named parts, tuple equality and hashing, and digests that never change.

The digests are pinned as hex computed by the code from before keys were typed (plain tuples): the
`<out>.index` sidecars on users' disks hold them, and a changed digest would make every file they list
look undone on the next run.
"""
from __future__ import annotations

import pytest

from vl2cli.output.latest import key_digest
from vl2cli.output.record import (FileKey, FileStamp, Request, ResumeKey, Sampling, SegmentKey, build_record,
                                  key_of_record, missing_file_key, resume_key)
from vl2cli.output.resume import ResumeIndex

STAMP = FileStamp("/data/clips/a.mp4", 1234, 1700000000123456789)
GREEDY = Request("caption", None, None, "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV", None, 8, "auto")
SAMPLED = Request("ask", "what happens?", None, "m", "abc123", 16, "av", sampling=Sampling(0.7, 1.0, 42))
LABELLED = Request("classify", None, ("cat", "dog"), "m", None, 8, "video", sampling=Sampling(1.0, 0.9, None))
SEGMENT = {"index": 2, "start_s": 120, "end_s": 180.5, "count": 5, "by": "60s"}

PINNED = [
    ("file", resume_key(STAMP, GREEDY), "03270e0ddc3b7445eaf31dc9671d551f"),
    ("sampled", resume_key(STAMP, SAMPLED), "4f3436416b05631d8ac213cf04cf6287"),
    ("labels, sampled, integral floats", resume_key(STAMP, LABELLED), "723b70f7738c507846fdc9f22db01202"),
    ("segment", resume_key(STAMP, GREEDY, SEGMENT), "59d3d12e76f04394631585bc34177a2b"),
    ("sampled segment", resume_key(STAMP, SAMPLED, SEGMENT), "98c0e4858135b8bbad2f3377de1b4271"),
    ("missing file", missing_file_key("/gone.mp4", GREEDY), "2799c35910a86e989414a3f738419d91"),
    ("file name not UTF-8", resume_key(FileStamp("/data/\udcff-odd.mp4", 0, 5), GREEDY),
     "3fc0c6d516515fc4d180394b297113f9"),
]


@pytest.mark.parametrize(("key", "digest"), [(key, digest) for _, key, digest in PINNED],
                         ids=[name for name, _, _ in PINNED])
def test_digests_are_those_sidecars_on_disk_hold(key: ResumeKey, digest: str) -> None:
    assert key_digest(key).hex() == digest


@pytest.mark.parametrize(("request_", "segment"), [(GREEDY, None), (SAMPLED, None), (GREEDY, SEGMENT),
                                                   (SAMPLED, SEGMENT)])
def test_a_record_read_back_has_the_key_and_digest_of_the_work_it_is_about(request_: Request,
                                                                          segment: dict | None) -> None:
    record = build_record(request_, path=STAMP.path, stamp=STAMP, vl2_version="x", segment=segment)
    key = key_of_record(record)
    assert key == resume_key(STAMP, request_, segment) and hash(key) == hash(resume_key(STAMP, request_, segment))
    assert key_digest(key) == key_digest(resume_key(STAMP, request_, segment))


def test_the_parts_have_names() -> None:
    key = resume_key(STAMP, SAMPLED, SEGMENT)
    assert isinstance(key.file, FileKey) and key.file.path == STAMP.path and key.file.mtime_ns == STAMP.mtime_ns
    assert (key.file.task, key.file.prompt, key.file.model_id, key.file.revision) == ("ask", "what happens?", "m",
                                                                                      "abc123")
    assert key.file.sampling == (0.7, 1.0, 42) and (key.file.frames, key.file.modality) == (16, "av")
    assert key.segment == SegmentKey("60s", 2, 120.0, 180.5)
    assert resume_key(STAMP, GREEDY).segment is None and resume_key(STAMP, GREEDY).file.sampling is None
    missing = missing_file_key("/gone.mp4", GREEDY).file
    assert (missing.size_bytes, missing.mtime_ns) == (None, None) and missing.task == "caption"


def test_a_segments_whole_file_is_the_files_key() -> None:
    whole = resume_key(STAMP, GREEDY)
    assert resume_key(STAMP, GREEDY, SEGMENT).whole_file == whole and whole.whole_file is whole
    assert resume_key(STAMP, GREEDY, SEGMENT) != whole


def test_the_flat_form_is_the_plain_tuple_keys_were() -> None:
    file_part = ("/data/clips/a.mp4", 1234, 1700000000123456789, "caption", None, None,
                 "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV", None, 8, "auto", None)
    assert resume_key(STAMP, GREEDY).flat() == file_part and type(resume_key(STAMP, GREEDY).flat()) is tuple
    assert resume_key(STAMP, GREEDY, SEGMENT).flat() == (*file_part, "segment", "60s", 2, 120.0, 180.5)


def test_keys_that_json_spells_differently_are_one_key_in_sets_and_indexes() -> None:
    """A float JSON wrote as an integer (60 for 60.0, 1 for 1.0) is the same value, as tuples compare."""
    spelled = build_record(LABELLED, path=STAMP.path, stamp=STAMP, vl2_version="x", segment=SEGMENT)
    spelled["sampling"]["temperature"] = 1
    spelled["segment"]["start_s"] = 120
    key = key_of_record(spelled)
    assert key in {resume_key(STAMP, LABELLED, SEGMENT)} and key_digest(key) == key_digest(resume_key(STAMP, LABELLED,
                                                                                                      SEGMENT))
    index = ResumeIndex()
    index.add(spelled)
    assert index.is_done(resume_key(STAMP, LABELLED, SEGMENT)) and not index.is_done(resume_key(STAMP, LABELLED))
    assert index.known_segments(resume_key(STAMP, LABELLED), "60s") is None  # 1 of the 5 segments only
