"""The pipeline with the real tiny reference checkpoints: modality routing, batching, classify, skip."""
from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from media_helpers.fixtures import MEDIA_FIXTURES, have_media
from reference_fixtures import load_reference, reference_root
from vl2cli import api
from vl2cli.errors import NoAudioStreamError, NoVideoStreamError, ModalityError, Vl2Error
from vl2cli.output.record import FileStamp, Request, key_of_record, resume_key
from vl2cli.commands.exit_codes import EXIT_OK, EXIT_SOME_FAILED
from vl2cli.tasks.modality import AUDIO_MISSING_NOTE, ModelTowers, choose_modality
from vl2cli.tasks.pipeline import run_task
from vl2cli.tasks.prompts import DEFAULT_CAPTION_PROMPTS, caption_instruction, classify_instruction, parse_labels
from vl2cli.tasks.spec import RunOptions, TaskSpec
from vl2cli.commands.summary import RunSummary

AV, VISION = ModelTowers(True, True), ModelTowers(True, False)
TINY_VIDEO = "av_tiny_128x96_30fps_h264_aac_6frames.mp4"
SILENT_VIDEO = "v_testsrc2_640x360_25fps_h264_noaudio_7p3s.mp4"
IMAGE = "img_smptehdbars_500x300.png"
SPEECH = "speech_espeak_16k_mono_5s.wav"
EMPTY = "broken_empty.mp4"
needs_fixtures = pytest.mark.skipif(not (reference_root() / "siglip-qwen2-av").is_dir() or not have_media(TINY_VIDEO, SILENT_VIDEO, IMAGE, SPEECH, EMPTY),
                                    reason="reference or media fixtures not found")


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("kind, has_audio, requested, towers, expected", [
    ("image", False, "auto", AV, "image"),
    ("image", False, "video", VISION, "image"),
    ("audio", True, "auto", AV, "audio"),
    ("video", True, "auto", AV, "av"),
    ("video", False, "auto", AV, "av"),  # silence stands in, as upstream; the record says so
    ("video", True, "auto", VISION, "video"),
    ("video", True, "video", AV, "video"),
    ("video", True, "audio", AV, "audio"),
    ("video", True, "av", AV, "av"),
])
def test_choose_modality(kind: str, has_audio: bool, requested: str, towers: ModelTowers, expected: str) -> None:
    assert choose_modality(kind, has_audio_stream=has_audio, requested=requested, towers=towers, path="f") == expected


@pytest.mark.parametrize("kind, has_audio, requested, towers, error", [
    ("audio", True, "auto", VISION, ModalityError),
    ("audio", True, "video", AV, NoVideoStreamError),
    ("image", False, "audio", AV, NoAudioStreamError),
    ("video", False, "audio", AV, NoAudioStreamError),
])
def test_choose_modality_errors_are_per_file(kind, has_audio, requested, towers, error) -> None:
    with pytest.raises(error):
        choose_modality(kind, has_audio_stream=has_audio, requested=requested, towers=towers, path="f")


def test_prompts_and_labels(tmp_path: Path) -> None:
    assert caption_instruction("image") == "Describe the image in detail."
    assert caption_instruction("av") == caption_instruction("video") == DEFAULT_CAPTION_PROMPTS["video"]
    assert caption_instruction("audio", "What instrument?") == "What instrument?"
    assert "cat, dog" in classify_instruction("video", ["cat", "dog"])
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# sports\nfootball\n tennis  # racket\n\nfootball\n")
    assert parse_labels(" cooking, sports,,music ") == ["cooking", "sports", "music"]
    assert parse_labels([f"@{labels_file}", "golf,tennis"]) == ["football", "tennis", "golf"]
    with pytest.raises(Vl2Error, match="cannot read"):
        parse_labels(f"@{tmp_path / 'missing.txt'}")


def test_task_spec_validation() -> None:
    with pytest.raises(Vl2Error, match="question"):
        TaskSpec("ask", prompt="  ")
    with pytest.raises(Vl2Error, match="label"):
        TaskSpec("classify", labels=())


def test_summary_counts_and_exit_code() -> None:
    summary = RunSummary()
    for record in (None, {"error": None}, {"error": None}):
        summary.count(record)
    assert summary.exit_code() == EXIT_OK
    assert "3 files: 2 done, 1 skipped, 0 failed" in summary.line()
    summary.count({"error": {"code": "x", "message": "y"}})
    assert summary.exit_code() == EXIT_SOME_FAILED
    clean_run = RunSummary()
    clean_run.count({"error": None})
    clean_run.failed_in_output = 2  # this run failed nothing, but the output still holds two permanent failures
    assert clean_run.exit_code() == EXIT_OK  # (cron: not exit 1 every night for a corrupt file of long ago)
    assert "2 file(s) of the output end in a permanent error" in clean_run.line()
    clean_run.pending_in_output = 1  # one of them is transient: a rerun tries it again, the run is not finished
    assert clean_run.exit_code() == EXIT_SOME_FAILED
    assert "1 file(s) of the output end in a transient error" in clean_run.line()
    assert "1 file(s) of the output end in a permanent error" in clean_run.line()


# ------------------------------------------------------------------ with the tiny models
def _load(name: str) -> Iterator[object]:
    fixture = load_reference(name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(fixture.hub_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield api.load_model(str(fixture.checkpoint))


@pytest.fixture(scope="module")
def av_model() -> Iterator[object]:
    yield from _load("siglip-qwen2-av")


@pytest.fixture(scope="module")
def vision_model() -> Iterator[object]:
    yield from _load("siglip-qwen2-stc-v35")


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    for name in (TINY_VIDEO, SILENT_VIDEO, IMAGE, SPEECH, EMPTY):
        shutil.copy(MEDIA_FIXTURES / name, folder / name)
    return folder


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in records}


@needs_fixtures
def test_batched_equals_one_at_a_time(av_model, media_dir: Path) -> None:
    task = TaskSpec("caption", max_new_tokens=6)
    files = sorted(media_dir.iterdir())
    batched = [o.record for o in run_task(av_model, files, task, RunOptions(batch_size=4, workers=2))]
    single = [o.record for o in run_task(av_model, files, task, RunOptions(batch_size=1, workers=1))]
    assert [r["path"] for r in batched] == [r["path"] for r in single] == [str(f) for f in files]
    assert any(r["timings_ms"]["batch_size"] == 4 for r in batched)
    for one, many in zip(single, batched):
        assert (one["output"], one["modality"], one["error"], one["notes"]) == \
               (many["output"], many["modality"], many["error"], many["notes"])
    by_name = _by_name(batched)
    assert by_name[EMPTY]["error"]["code"] == "empty_file" and by_name[EMPTY]["output"] is None
    assert by_name[SILENT_VIDEO]["modality"] == "av" and by_name[SILENT_VIDEO]["audio_missing"] is True
    assert by_name[SILENT_VIDEO]["notes"] == [AUDIO_MISSING_NOTE]
    assert by_name[TINY_VIDEO]["audio_missing"] is False
    assert by_name[SPEECH]["modality"] == "audio"
    assert by_name[SPEECH]["instruction"] == "Describe the audio in detail."
    assert by_name[IMAGE]["modality"] == "image" and by_name[IMAGE]["media"]["kind"] == "image"
    assert all(isinstance(r["output"], str) for r in batched if r["error"] is None)


@needs_fixtures
def test_classify_scores_every_label(av_model, media_dir: Path) -> None:
    records = api.classify(av_model, [media_dir / TINY_VIDEO, media_dir / IMAGE], "cooking,sports,music", top_k=2,
                           workers=1)
    for record in records:
        scores = record["label_scores"]
        assert sorted(s["label"] for s in scores) == ["cooking", "music", "sports"]
        softmax = torch.softmax(torch.tensor([s["log_likelihood"] for s in scores], dtype=torch.float64), dim=0)
        assert [s["probability"] for s in scores] == pytest.approx(softmax.tolist(), abs=1e-6)
        assert [s["probability"] for s in scores] == sorted((s["probability"] for s in scores), reverse=True)
        assert record["top_k"] == [s["label"] for s in scores[:2]]
        assert record["output"] == scores[0]["label"]
        assert record["labels"] == ["cooking", "sports", "music"]


#: fp32 on CPU: batched label scores equal one-at-a-time scores within this: relative, as log-likelihoods
#: are sums reaching -145 where one float32 step is 1.5e-5 (see tests/test_label_scoring.py).
SCORE_RTOL, SCORE_ATOL = 1e-6, 1e-5


@needs_fixtures
def test_classify_batched_equals_one_at_a_time(av_model, media_dir: Path) -> None:
    task = TaskSpec("classify", labels=("cooking", "sports", "music videos"), top_k=2)
    files = sorted(media_dir.iterdir())
    batched = _by_name([o.record for o in run_task(av_model, files, task, RunOptions(batch_size=4, workers=2))])
    single = _by_name([o.record for o in run_task(av_model, files, task, RunOptions(batch_size=1, workers=1))])
    assert any(r["timings_ms"]["batch_size"] > 1 for r in batched.values())
    for name, one in single.items():
        many = batched[name]
        assert (many["error"], many["modality"]) == (one["error"], one["modality"])
        if one["error"] is not None:
            continue
        assert [s["label"] for s in many["label_scores"]] == [s["label"] for s in one["label_scores"]]
        assert [s["log_likelihood"] for s in many["label_scores"]] == \
               pytest.approx([s["log_likelihood"] for s in one["label_scores"]], rel=SCORE_RTOL, abs=SCORE_ATOL)


@needs_fixtures
def test_classify_batch_failure_is_retried_file_by_file(av_model, media_dir: Path, monkeypatch) -> None:
    """A batch whose scoring raises is scored again one file at a time; only the bad file fails."""
    scored = av_model.score_labels_batch
    bad = media_dir / IMAGE

    def fails_with_the_image(inputs, instructions, labels, **kwargs):
        if any(i.modality == "image" for i in inputs):
            raise RuntimeError("scoring failed")
        return scored(inputs, instructions, labels, **kwargs)

    monkeypatch.setattr(av_model, "score_labels_batch", fails_with_the_image)
    records = _by_name(api.classify(av_model, [media_dir / TINY_VIDEO, bad], "cooking,sports", workers=1))
    assert records[IMAGE]["error"]["code"] == "model_error" and "scoring failed" in records[IMAGE]["error"]["message"]
    assert records[TINY_VIDEO]["error"] is None and records[TINY_VIDEO]["output"] in ("cooking", "sports")


@needs_fixtures
@pytest.mark.skipif(not (reference_root() / "siglip-qwen2-stc-v35").is_dir(), reason="needs the siglip-qwen2-stc-v35 fixture")
def test_vision_only_model_routes_and_refuses_audio(vision_model, media_dir: Path) -> None:
    records = _by_name(api.caption(vision_model, media_dir, max_new_tokens=3, workers=1, kinds=["video", "audio"]))
    assert set(records) == {TINY_VIDEO, SILENT_VIDEO, SPEECH, EMPTY}
    assert records[TINY_VIDEO]["modality"] == "video" and records[TINY_VIDEO]["notes"] == []
    assert records[SPEECH]["error"]["code"] == "unsupported_modality"
    assert "audio tower" in records[SPEECH]["error"]["message"]
    with pytest.raises(Vl2Error, match="no audio tower"):
        api.caption(vision_model, media_dir, modality="audio")


@needs_fixtures
def test_done_files_are_skipped_without_decoding(av_model, media_dir: Path, monkeypatch) -> None:
    from vl2cli.media import workers

    target = media_dir / IMAGE
    task = TaskSpec("ask", prompt="what colour?", max_new_tokens=2)
    first = [o.record for o in run_task(av_model, [target], task, RunOptions(workers=1))]
    done = {key_of_record(first[0])}
    assert key_of_record(first[0]) == resume_key(FileStamp.of(target), _request(av_model, task))
    decoded: list[str] = []
    real_decode_one = workers.decode_one

    def recording_decode_one(load_fn, path, spec):
        decoded.append(Path(path).name)
        return real_decode_one(load_fn, path, spec)

    # One file left to do is decoded in this process (InlineDecoder), so every decode passes here.
    monkeypatch.setattr(workers, "decode_one", recording_decode_one)
    outcomes = list(run_task(av_model, [target, media_dir / EMPTY], task, RunOptions(workers=1), is_done=done.__contains__))
    assert [o.skipped for o in outcomes] == [True, False]
    assert decoded == [EMPTY], "the done file must not be decoded; the other one must"
    # the run path plans done files as runs (SkippedFiles), before or after the work the runner does;
    # the library's iter_outcomes still yields one skipped FileOutcome per file
    for paths in ([target, media_dir / EMPTY], [media_dir / EMPTY, target]):
        outcomes = list(api.iter_outcomes(av_model, paths, task, RunOptions(workers=1), is_done=done.__contains__))
        # (a skipped file is reported as it is met, possibly before the record of a file planned before it)
        assert sorted((type(o).__name__, o.path.name, o.skipped) for o in outcomes) == sorted(
            ("FileOutcome", path.name, path == target) for path in paths)


def _request(model, task: TaskSpec) -> Request:
    return Request(task.task, task.prompt, task.labels, model.model_id, model.revision, model.num_frames, "auto")


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal, as stderr is for a user at a shell."""

    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_not_when_quiet() -> None:
    from vl2cli.commands.console import Console

    terminal = _Terminal()
    console = Console(quiet=False, stderr=terminal)
    summary = RunSummary()
    with console.start():
        summary.count({"error": None})
        console.set_total(2)  # the walk ended: the bar learns its total
        console.advance(summary)
        console.log("vl2: failed: x")
    assert "files" in terminal.getvalue() and "vl2: failed: x" in terminal.getvalue()
    assert "1/2" in terminal.getvalue()
    for console in (Console(quiet=True, stderr=_Terminal()), Console(quiet=False, stderr=io.StringIO())):
        with console.start():
            console.log("vl2: failed: y", logging.ERROR)
            console.log("vl2: loading the model")  # info: quiet drops it
        expected = "vl2: failed: y\n" + ("" if console.level > logging.INFO else "vl2: loading the model\n")
        assert console.progress is None and console.stderr.getvalue() == expected


@needs_fixtures
def test_rerun_with_nothing_new_never_loads_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vl2cli.errors import CheckpointError
    from vl2cli.settings import resolve_settings
    from vl2cli.commands.run_command import execute

    fixture = load_reference("siglip-qwen2-av")
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(fixture.checkpoint, checkpoint)
    folder = tmp_path / "clips"
    folder.mkdir()
    shutil.copy(MEDIA_FIXTURES / IMAGE, folder / IMAGE)
    out = tmp_path / "out.jsonl"
    settings = resolve_settings({"model": str(checkpoint), "out": str(out), "max_new_tokens": 2, "workers": 1}, env={}).settings
    stderr = io.StringIO()
    assert execute("caption", [folder], settings, stderr=stderr) == EXIT_OK
    (checkpoint / "model.safetensors").unlink()  # loading the weights would now fail
    stderr = io.StringIO()
    assert execute("caption", [folder], settings, stderr=stderr) == EXIT_OK
    assert "1 files: 0 done, 1 skipped, 0 failed" in stderr.getvalue()
    shutil.copy(MEDIA_FIXTURES / TINY_VIDEO, folder / TINY_VIDEO)  # something new: now the weights are needed
    with pytest.raises(CheckpointError):
        execute("caption", [folder], settings, stderr=io.StringIO())
    assert len(out.read_text().splitlines()) == 1


def test_stream_notes_reach_the_record_only_for_streams_the_model_sees() -> None:
    from vl2cli.media.loader import LoadedMedia, MediaNote
    from vl2cli.media.probe import MediaInfo
    from vl2cli.tasks.modality import to_model_input

    info = MediaInfo("x.mkv", "video", 1, "matroska", 6.0, True, True, 96, 64, 25.0, None, "h264", "aac", 48000, 1)
    loaded = LoadedMedia(info, torch.zeros(1, 3, 4, 4), torch.zeros(2998, 128), False, [0],
                         notes=[MediaNote("video", "video cut"), MediaNote("audio", "audio cut")])
    assert to_model_input(loaded, "av").notes == ["video cut", "audio cut"]
    assert to_model_input(loaded, "video").notes == ["video cut"]
    assert to_model_input(loaded, "audio").notes == ["audio cut"]


def test_the_progress_bar_names_the_batch_being_worked_on() -> None:
    from vl2cli.commands.console import Console

    terminal = _Terminal()
    console = Console(quiet=False, stderr=terminal)
    summary = RunSummary()
    with console.start():
        console.working_on([Path("/a/first.mp4"), Path("/a/second.mp4"), Path("/a/third.mp4")])
        summary.count({"error": None})
        console.advance(summary, Path("/a/zero.mp4"))  # a file of the previous batch finishing
        shown = console.progress.tasks[0].description
    assert shown == "first.mp4 +2"


@needs_fixtures
def test_each_batch_is_announced_before_the_model_works_on_it(av_model, media_dir: Path) -> None:
    announced: list[list[str]] = []
    task = TaskSpec("caption", max_new_tokens=2)
    options = RunOptions(workers=1, batch_size=2, on_batch=lambda paths: announced.append([p.name for p in paths]))
    files = [media_dir / TINY_VIDEO, media_dir / IMAGE, media_dir / EMPTY, media_dir / SILENT_VIDEO]
    outcomes = list(run_task(av_model, files, task, options))
    assert [o.path.name for o in outcomes] == [f.name for f in files]
    assert [name for batch in announced for name in batch] == [TINY_VIDEO, IMAGE, SILENT_VIDEO]  # not the broken one
    assert all(len(batch) <= 2 for batch in announced)
