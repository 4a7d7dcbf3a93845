"""Asking more with one load: several questions per run (`ask -q`), `vl2 chat`, and sampling.

Encoder calls are counted on the real tiny model (its torch encoders, wrapped only to count), so
"each file is encoded once" is checked, not assumed."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import REPO_ROOT, offline_fixture_hub
from vl2cli import api
from vl2cli.output import load_schema
from vl2cli.output.record import Sampling
from vl2cli.settings import resolve_settings
from vl2cli.tasks.chat import ChatSession
from vl2cli.commands.run_command import execute
from vl2cli.tasks.spec import RunOptions, TaskSpec

AV_FIXTURE = "siglip-qwen2-av"
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
IMAGE = "img_smptehdbars_500x300.png"
pytestmark = needs_fixtures(reference=(AV_FIXTURE,), media=(TINY_VIDEO, IMAGE))
TOKENS = 4


@pytest.fixture(scope="module")
def hub_env() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def model(hub_env: Any) -> Any:
    return api.load_model(str(hub_env.checkpoint), encoder_backend="torch")


@pytest.fixture()
def encoder_calls(model: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the real encoders run (frames through the vision tower, fbanks through BEATs)."""
    calls = {"frames": 0, "audio": 0}
    encoders = model.encoders
    for name, what in (("encode_frames", "frames"), ("encode_audio", "audio")):
        real = getattr(encoders, name)

        def counting(*args: Any, _real: Any = real, _what: str = what, **kwargs: Any) -> Any:
            calls[_what] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(encoders, name, counting)
    return calls


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("media")
    paths = []
    for name in (TINY_VIDEO, IMAGE):
        (folder / name).write_bytes((MEDIA_FIXTURES / name).read_bytes())
        paths.append(folder / name)
    return paths


QUESTIONS = ("what is shown?", "what sound is heard?")


def test_several_questions_equal_separate_runs_and_encode_each_file_once(model: Any, files: list[Path],
                                                                         encoder_calls: dict[str, int]) -> None:
    together = api.ask(model, files, list(QUESTIONS), max_new_tokens=TOKENS, workers=1)
    assert encoder_calls == {"frames": 2, "audio": 1}  # the video (frames + sound) and the image, once each
    separate = [r for q in QUESTIONS for r in api.ask(model, files, q, max_new_tokens=TOKENS, workers=1)]
    assert encoder_calls == {"frames": 6, "audio": 3}
    assert [(r["path"], r["prompt"]) for r in together] == [(str(f), q) for f in files for q in QUESTIONS]
    expected = {(r["path"], r["prompt"]): r["output"] for r in separate}
    assert {(r["path"], r["prompt"]): r["output"] for r in together} == expected
    validator = jsonschema.Draft202012Validator(load_schema())
    for record in together:
        validator.validate(record)


def test_a_rerun_with_one_more_question_does_only_the_new_one(hub_env: Any, files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "qa.jsonl"
    settings = resolve_settings({"model": str(hub_env.checkpoint), "max_new_tokens": TOKENS, "out": str(out),
                                 "quiet": True, "log_level": "info", "workers": 1,
                                 "log_files": True}, env={}).settings
    first_err, second_err = io.StringIO(), io.StringIO()
    assert execute("ask", [files[0]], settings, questions=QUESTIONS[:1], stderr=first_err) == 0
    assert execute("ask", [files[0]], settings, questions=QUESTIONS, stderr=second_err) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == [QUESTIONS[0], QUESTIONS[1]]
    assert "2 files: 1 done, 1 skipped, 0 failed" in second_err.getvalue()
    from test_file_log import LINE  # --log-files: one line per finished record, none for the skipped one
    logged = [LINE.match(line) for line in second_err.getvalue().splitlines() if LINE.match(line)]
    assert [(m.group(1), m.group(3)) for m in logged] == [("done", str(files[0]))]
    assert float(logged[0].group(2)) * 1000 == pytest.approx(records[1]["timings_ms"]["total"], abs=5)


def test_chat_answers_each_question_and_encodes_a_file_once(model: Any, files: list[Path],
                                                             encoder_calls: dict[str, int]) -> None:
    session = api.chat(model, files[:1], max_new_tokens=TOKENS)
    assert isinstance(session, ChatSession)
    first, second = session.ask(QUESTIONS[0]), session.ask(QUESTIONS[1])
    assert encoder_calls == {"frames": 1, "audio": 1}
    assert session.feature_cache.stored == 1 and session.feature_cache.hits == 1
    assert second[0]["timings_ms"]["decode"] == 0  # decoded once too
    # the second question came after the first turn (upstream's chat memory); the first stands alone
    assert session.turns(files[0]) == [(QUESTIONS[0], first[0]["output"]), (QUESTIONS[1], second[0]["output"])]
    assert "asked after 1 earlier turn(s) of the chat" in second[0]["notes"]
    assert not any("earlier turn" in note for note in first[0]["notes"])
    alone = [api.ask(model, files[:1], q, max_new_tokens=TOKENS, workers=1)[0]["output"] for q in QUESTIONS]
    assert first[0]["output"] == alone[0]
    session.reset()  # forgets the turns, not the media: the question stands alone again
    assert session.turns(files[0]) == []
    assert session.ask(QUESTIONS[1])[0]["output"] == alone[1]
    assert session.feature_cache.stored == 1  # still the media encoded for the first question
    files[0].touch()  # a changed file (new mtime) is decoded and encoded again, and starts a new conversation
    os.utime(files[0], ns=(1, 1))
    session.ask(QUESTIONS[0])
    assert session.feature_cache.stored == 2
    assert [question for question, _ in session.turns(files[0])] == [QUESTIONS[0]]


def test_chat_over_a_pipe_prints_one_answer_per_line(hub_env: Any, files: list[Path]) -> None:
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_CACHE=str(hub_env.hub_cache), HF_HUB_OFFLINE="1")
    args = [sys.executable, "-m", "vl2cli.cli", "chat", str(files[0]), "--model", str(hub_env.checkpoint),
            "--max-new-tokens", str(TOKENS)]
    run = subprocess.run(args, input=f"{QUESTIONS[0]}\n\n{QUESTIONS[1]}\n", capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2
    assert "2 question(s) about 1 file(s): 2 answered, 0 failed; media encoded 1 time(s), reused 1 time(s)" in run.stderr
    as_json = subprocess.run([*args, "--json"], input=f"{QUESTIONS[0]}\n", capture_output=True, text=True, env=env,
                             timeout=300)
    record = json.loads(as_json.stdout)
    assert record["prompt"] == QUESTIONS[0] and record["task"] == "ask"
    assert " ".join(record["output"].split()) == run.stdout.splitlines()[0]


def test_sampling_is_reproducible_with_a_seed_and_recorded(model: Any, files: list[Path]) -> None:
    def sampled(seed: int | None) -> list[dict]:
        task = TaskSpec("ask", prompt=QUESTIONS[0], max_new_tokens=8, sampling=Sampling(1.0, 1.0, seed))
        return list(api.iter_records(model, files, task, workers=1))

    first, again, other = sampled(7), sampled(7), sampled(8)
    assert [r["output"] for r in first] == [r["output"] for r in again]
    assert [r["output"] for r in first] != [r["output"] for r in other]
    greedy = api.ask(model, files, QUESTIONS[0], max_new_tokens=8, workers=1)
    assert [r["output"] for r in api.ask(model, files, QUESTIONS[0], max_new_tokens=8, workers=1, temperature=1.0,
                                         top_p=1.0, seed=7)] == [r["output"] for r in first]
    assert [r["output"] for r in first] != [r["output"] for r in greedy]
    assert first[0]["sampling"] == {"temperature": 1.0, "top_p": 1.0, "seed": 7} and greedy[0]["sampling"] is None
    from vl2cli.output.record import key_of_record
    assert key_of_record(first[0]) != key_of_record(greedy[0]) != key_of_record(other[0])
    jsonschema.Draft202012Validator(load_schema()).validate(first[0])
