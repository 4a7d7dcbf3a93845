"""Schema version 3: `generation` (how an answer ended, its token counts) and `runtime` (what made the
record); v1/v2 records still read, each by its own version's rules; a rerun with a bigger answer budget
redoes exactly the answers that were cut off."""
from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, have_media
from reference_fixtures import (case_input, case_instructions, fixture_names, load_fixture_model, load_reference,
                                reference_root)
from reference_v1_fixtures import case_input as v1_case_input
from reference_v1_fixtures import case_question, load_v1_fixture, load_v1_model, v1_fixture_names
from test_cli import AV_FIXTURE, TINY_VIDEO, vl2_in_process
from vl2cli import __version__
from vl2cli.output import FileStamp, JsonlWriter, Request, ResumeIndex, build_record, load_schema, read_records
from vl2cli.output.record import SCHEMA_VERSION, cut_off_at, generation_facts, needs_rerun, resume_key
from vl2cli.output.schema import record_problem

REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")
RUNTIME = {"device": "cpu", "dtype": "float32", "encoder_backend": "torch", "video_backend": "decord",
           "versions": {"vl2": "0", "torch": "2.9", "transformers": "5.0"}}
CUT = generation_facts("length", 90, 3)
ENDED = generation_facts("eos", 90, 2)
BUDGETS = (1, 2, 3)


@pytest.fixture()
def stamp(tmp_path: Path) -> FileStamp:
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    return FileStamp.of(media)


def _record(stamp: FileStamp, **fields) -> dict:
    return build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="0", output="a cat", modality="video",
                        **fields)


# ------------------------------------------------------------------ schema
def test_v3_fields_come_last_and_every_version_is_read_by_its_own_rules(tmp_path: Path, stamp: FileStamp) -> None:
    v3 = _record(stamp, generation=CUT, runtime=RUNTIME)
    assert SCHEMA_VERSION == 3 and v3["schema_version"] == 3
    assert list(v3)[-4:] == ["vl2_version", "created_at", "generation", "runtime"]
    v2 = _record(stamp, schema_version=2)
    assert "generation" not in v2 and "runtime" not in v2
    v1 = {k: v for k, v in v2.items() if k not in ("sampling", "segment", "decoding")} | {"schema_version": 1}
    out = tmp_path / "out.jsonl"
    with JsonlWriter(out) as writer:
        for record in (v1, v2, v3, _record(stamp, generation=None, runtime=None)):
            writer.write(record)
    assert [r["schema_version"] for r in read_records(out)] == [1, 2, 3, 3]


@pytest.mark.parametrize("change,reason", [
    ({"generation": {**CUT, "finish_reason": "stop"}}, "record.generation.finish_reason"),
    ({"generation": {**CUT, "output_tokens": 0}}, "record.generation.output_tokens: minimum 1"),
    ({"generation": {"finish_reason": "eos", "prompt_tokens": 3}}, "record.generation: no 'output_tokens'"),
    ({"generation": {**CUT, "logits": []}}, "record.generation: unexpected field 'logits'"),
    ({"generation": "length"}, "record.generation: expected object or null"),
    ({"runtime": {**RUNTIME, "dtype": 32}}, "record.runtime.dtype: expected string"),
    ({"runtime": {k: v for k, v in RUNTIME.items() if k != "versions"}}, "record.runtime: no 'versions'"),
    ({"runtime": {**RUNTIME, "versions": {"vl2": "0", "torch": None}}}, "record.runtime.versions: no 'transformers'"),
    ({"schema_version": 2}, "not allowed in this schema_version"),  # a v2 record has no v3 fields
])
def test_a_malformed_generation_or_runtime_is_no_record(stamp: FileStamp, change: dict, reason: str) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    good = _record(stamp, generation=CUT, runtime=RUNTIME)
    assert record_problem(good) is None and validator.is_valid(good)
    bad = {**good, **change}
    problem = record_problem(bad)
    assert problem is not None and reason in problem and not validator.is_valid(bad)


def test_a_v3_record_needs_both_fields(stamp: FileStamp) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    for name in ("generation", "runtime"):
        bad = {k: v for k, v in _record(stamp).items() if k != name}
        assert record_problem(bad) == f"record: no {name!r}" and not validator.is_valid(bad)


# ------------------------------------------------------------------ resume
def test_needs_rerun_only_below_a_bigger_budget() -> None:
    assert needs_rerun(3, 4) and not needs_rerun(3, 3) and not needs_rerun(3, 2)
    assert not needs_rerun(None, 4) and not needs_rerun(3, None)
    assert cut_off_at({"generation": CUT}) == 3
    assert cut_off_at({"generation": ENDED}) is None and cut_off_at({"generation": None}) is None
    assert cut_off_at({}) is None  # v1/v2 records never say


def test_a_bigger_budget_redoes_exactly_the_cut_off_answers(tmp_path: Path) -> None:
    stamps = []
    for name in ("cut.mp4", "ended.mp4", "old.mp4", "classified.mp4", "cut_again.mp4"):
        (tmp_path / name).write_bytes(b"x")
        stamps.append(FileStamp.of(tmp_path / name))
    cut, ended, old, classified, cut_again = stamps
    index = ResumeIndex()
    index.add(_record(cut, generation=CUT, runtime=RUNTIME))
    index.add(_record(ended, generation=ENDED, runtime=RUNTIME))
    index.add(_record(old, schema_version=2))
    index.add(_record(classified, generation=generation_facts(None, 90, None), runtime=RUNTIME))
    index.add(_record(cut_again, generation=CUT, runtime=RUNTIME))
    index.add(_record(cut_again, generation=generation_facts("length", 90, 8), runtime=RUNTIME))  # the latest wins
    done = lambda s, budget: index.is_done(resume_key(s, REQUEST), max_new_tokens=budget)  # noqa: E731
    assert [done(s, 8) for s in stamps] == [False, True, True, True, True]
    assert [done(s, 9) for s in stamps] == [False, True, True, True, False]
    assert all(done(s, 3) for s in stamps) and all(index.is_done(resume_key(s, REQUEST)) for s in stamps)


# ------------------------------------------------------------------ the model
def _check_generations(model, generations, mask, budget: int) -> None:
    for row, generation in enumerate(generations):
        assert generation.finish_reason == "length" and not generation.stopped_on_eos
        assert generation.output_tokens == len(generation.token_ids) == budget
        assert generation.token_ids[-1] not in model.eos_token_ids
        assert generation.prompt_tokens == int(mask[row].sum())


@pytest.mark.skipif(not fixture_names(), reason="no reference fixtures found")
@pytest.mark.parametrize("decode_loop", ["static", "dynamic"])
def test_videollama2_answers_cut_off_at_the_budget_say_length(monkeypatch, decode_loop: str) -> None:
    name = fixture_names()[0]
    fixture, model = load_reference(name), load_fixture_model(monkeypatch, name)
    cases = fixture.cases()
    items = [case_input(fixture, cases[c]) for c in list(cases)[:2]]
    instructions = [case_instructions(cases[c])[0] for c in list(cases)[:2]]
    _, mask = model.prepare_inputs(items, instructions)
    for budget in BUDGETS:
        _check_generations(model, model.generate(items, instructions, max_new_tokens=budget, decode_loop=decode_loop),
                           mask, budget)


@pytest.mark.skipif(not v1_fixture_names(), reason="no Video-LLaMA (v1) fixtures found")
@pytest.mark.parametrize("decode_loop", ["static", "dynamic"])
def test_videollama_v1_answers_cut_off_at_the_budget_say_length(monkeypatch, decode_loop: str) -> None:
    name = v1_fixture_names()[0]
    fixture, model = load_v1_fixture(name), load_v1_model(monkeypatch, name)
    single = next(c for c, g in fixture.cases().items() if case_question(g) is not None)
    item, question = v1_case_input(fixture, single), case_question(fixture.cases()[single])
    _, mask = model.prepare_inputs([item], [question])
    for budget in BUDGETS:
        _check_generations(model, model.generate([item], [question], max_new_tokens=budget, decode_loop=decode_loop),
                           mask, budget)


@pytest.mark.skipif(not fixture_names(), reason="no reference fixtures found")
def test_an_answer_that_ends_says_eos_with_its_stop_token_counted(monkeypatch) -> None:
    """The counterpart: an answer the fixture's goldens end before the budget is eos, its stop id counted."""
    for name in fixture_names():
        fixture, model = load_reference(name), load_fixture_model(monkeypatch, name)
        for case in fixture.cases().values():
            golden = case["generated_ids"][0]
            stop = next((k for k, token in enumerate(golden) if token in model.eos_token_ids), None)
            if stop is None:
                continue
            generation = model.generate([case_input(fixture, case)], case_instructions(case)[:1],
                                        max_new_tokens=case["generate_kwargs"]["max_new_tokens"])[0]
            assert generation.finish_reason == "eos" and generation.output_tokens == stop + 1
            return
    pytest.skip("no fixture case ends before its budget")


# ------------------------------------------------------------------ the run, end to end
@pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir() or not have_media(TINY_VIDEO),
                    reason="reference or media fixtures not found")
def test_records_say_how_answers_ended_and_a_bigger_budget_redoes_them(tmp_path: Path) -> None:
    clip = Path(shutil.copy(MEDIA_FIXTURES / TINY_VIDEO, tmp_path / TINY_VIDEO))
    out = tmp_path / "captions.jsonl"
    model = ["--model", str(reference_root() / AV_FIXTURE / "checkpoint"), "--out", str(out), "--quiet"]
    assert vl2_in_process("caption", str(clip), *model, "--max-new-tokens", "2").returncode == 0
    assert vl2_in_process("caption", str(clip), *model, "--max-new-tokens", "2").returncode == 0  # done: skipped
    assert vl2_in_process("caption", str(clip), *model, "--max-new-tokens", "3").returncode == 0  # cut off: redone
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["generation"]["output_tokens"] for r in records] == [2, 3]
    assert {r["generation"]["finish_reason"] for r in records} == {"length"}
    assert records[0]["generation"]["prompt_tokens"] == records[1]["generation"]["prompt_tokens"] > 0
    runtime = records[1]["runtime"]
    assert runtime["device"] == "cpu" and runtime["dtype"] == "float32" and runtime["encoder_backend"] == "torch"
    assert runtime["video_backend"] == "decord" == records[1]["decoding"]["video_backend"]
    assert runtime["versions"] == {"vl2": __version__, "torch": metadata.version("torch"),
                                   "transformers": metadata.version("transformers")}
