"""Schema version 2 adds `sampling`, optionally: v1 records stay valid and still resume greedy runs (v3: test_record_v3)."""
from __future__ import annotations

from pathlib import Path

import jsonschema

from vl2cli.output import load_schema
from vl2cli.output.record import FileStamp, Request, Sampling, build_record, key_of_record, resume_key
from vl2cli.output.resume import ResumeIndex

GREEDY = Request(task="ask", prompt="who?", labels=None, model_id="m", revision=None, frames=8, modality="auto")
SAMPLED = Request(**{**GREEDY.__dict__, "sampling": Sampling(temperature=0.7, top_p=0.9, seed=3)})


def test_a_v1_record_is_valid_v2_and_resumes_a_greedy_run_only(tmp_path: Path) -> None:
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    stamp = FileStamp.of(media)
    v1 = build_record(GREEDY, path=stamp.path, stamp=stamp, vl2_version="0", output="a", modality="av", schema_version=2)
    del v1["sampling"]
    v1["schema_version"] = 1
    validator = jsonschema.Draft202012Validator(load_schema())
    validator.validate(v1)
    index = ResumeIndex()
    index.add(v1)
    assert index.is_done(resume_key(stamp, GREEDY)) and not index.is_done(resume_key(stamp, SAMPLED))

    v2 = build_record(SAMPLED, path=stamp.path, stamp=stamp, vl2_version="0", output="b", modality="av",
                      schema_version=2)
    assert v2["schema_version"] == 2 and "generation" not in v2 and "runtime" not in v2
    assert v2["sampling"] == {"temperature": 0.7, "top_p": 0.9, "seed": 3}
    validator.validate(v2)
    assert key_of_record(v2) == resume_key(stamp, SAMPLED)
    other_seed = Request(**{**GREEDY.__dict__, "sampling": Sampling(temperature=0.7, top_p=0.9, seed=4)})
    assert key_of_record(v2) != resume_key(stamp, other_seed)
    bad = {**v2, "sampling": {"temperature": 0, "top_p": 0.9, "seed": None}}
    assert not validator.is_valid(bad)  # temperature 0 is greedy: recorded as null, never as a sampling object
