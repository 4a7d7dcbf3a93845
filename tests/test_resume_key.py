"""Resume keys: equality and hashing, and digests that never change.

The digests are pinned as hex computed by the code of this commit (keys as plain tuples): the
`<out>.index` sidecars on users' disks hold them, and a changed digest would make every file they list
look undone on the next run.
"""
from __future__ import annotations

import pytest

from vl2cli.output.latest import key_digest
from vl2cli.output.record import (FileStamp, Request, ResumeKey, Sampling, build_record, key_of_record,
                                  missing_file_key, resume_key)

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
