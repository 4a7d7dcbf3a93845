"""The typed `Record`: its JSON form is the schema's, in the order records are written, and it reads back
to itself."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema

from vl2cli.errors import CorruptMediaError
from vl2cli.output import FileStamp, JsonlWriter, Record, Request, load_schema, read_records
from vl2cli.output.record import Sampling, key_of_record, resume_key
from vl2cli.output.writer import encode_record

REQUEST = Request("classify", None, ("cat", "dog"), "m", "rev", 8, "auto", family="videollama",
                  sampling=Sampling(0.7, 0.9, 3))


#: The order records have always been written in (byte-for-byte the same JSONL as before the type).
FIELD_ORDER = ["schema_version", "path", "segment", "file", "media", "decoding", "task", "prompt", "instruction",
               "labels", "model", "frames", "modality_requested", "sampling", "modality", "audio_missing", "notes",
               "output", "label_scores", "top_k", "timings_ms", "error", "vl2_version", "created_at"]


def _records(stamp: FileStamp) -> list[Record]:
    scores = [{"label": "cat", "probability": 0.75, "log_likelihood": -0.25, "num_tokens": 1},
              {"label": "dog", "probability": 0.25, "log_likelihood": -1.5, "num_tokens": 2}]
    done = Record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="0", media={"kind": "video", "has_video": True, "has_audio": True},
                  instruction="Which?", modality="av", audio_missing=True, notes=("silence used",), output="cat",
                  label_scores=scores, top_k=["cat"], timings_ms={"decode": 1.5, "model": 2.0, "total": 3.5,
                                                                   "batch_size": 2},
                  segment={"index": 0, "start_s": 0.0, "end_s": 60.0, "count": 2, "by": "60s"},
                  decoding={"video_backend": "decord", "video_rotation": 0, "audio_stream": 1})
    failed = Record(REQUEST, path=stamp.path, stamp=None, vl2_version="0",
                    error=CorruptMediaError("broken").as_record_error())
    return [done, failed]


def test_the_json_form_is_valid_and_keeps_the_written_field_order(tmp_path: Path) -> None:
    media = tmp_path / "a.mp4"
    media.write_bytes(b"x")
    validator = jsonschema.Draft202012Validator(load_schema())
    for record in _records(FileStamp.of(media)):
        data = record.as_dict()
        validator.validate(data)
        assert list(data) == FIELD_ORDER and set(FIELD_ORDER) == set(load_schema()["properties"])
    assert _records(FileStamp.of(media))[1].as_dict()["timings_ms"] == {"decode": None, "model": None, "total": None}


def test_a_record_reads_back_to_itself_through_a_file(tmp_path: Path) -> None:
    media = tmp_path / "a.mp4"
    media.write_bytes(b"x")
    stamp = FileStamp.of(media)
    out = tmp_path / "out.jsonl"
    written = _records(stamp)
    with JsonlWriter(out) as writer:
        for record in written:
            writer.write(record.as_dict())
    back = [Record.from_dict(data) for data in read_records(out)]
    assert [r.as_dict() for r in back] == [r.as_dict() for r in written]
    assert b"".join(encode_record(r.as_dict()) for r in back) == out.read_bytes(), "byte-for-byte the same lines"
    assert key_of_record(back[0].as_dict()) == resume_key(stamp, REQUEST, written[0].segment)


def test_a_v1_record_reads_back_as_its_v2_form(tmp_path: Path) -> None:
    media = tmp_path / "a.mp4"
    media.write_bytes(b"x")
    greedy = dataclasses.replace(REQUEST, sampling=None, family="videollama2")
    v2 = Record(greedy, path=str(media), stamp=FileStamp.of(media), vl2_version="0", output="a", modality="av")
    v1 = {k: v for k, v in v2.as_dict().items() if k not in ("sampling", "segment", "decoding")}
    v1["schema_version"] = 1
    del v1["model"]["family"]
    assert Record.from_dict(v1).as_dict() == v2.as_dict()
