"""Long files cut into timed segments (`--segment`): the windows, scene cuts, what each segment decodes,
one record per segment, resume inside a file, batching, and subtitles.

The long videos are made here with PyAV: 5 minutes at 64x48 and 4 fps, a new scene (a flat colour
with a small drifting square) every 40 s, so cuts lie exactly at frames 160, 320, ...
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import numpy as np
import pytest

from media_helpers.synth import SCENE_COLOURS, scene_of_frame, write_scene_video
from reference_fixtures import offline_fixture_hub, reference_root
from vl2cli import __version__
from vl2cli.errors import Vl2Error
from vl2cli.media.audio import decode_audio_track_16k_mono, decode_audio_window_16k_mono
from vl2cli.media.loader import Clip, MediaSpec, load_media
from vl2cli.media.sampling import clip_frame_range, sample_frame_indices
from vl2cli.media.scenes import detect_scene_cuts
from vl2cli.media.segments import fixed_windows, parse_duration, scene_windows
from vl2cli.media.video import decode_video_frames
from vl2cli.output import load_schema
from vl2cli.output.record import FileStamp, Request, build_record, key_of_record, resume_key
from vl2cli.output.resume import ResumeIndex
from vl2cli.output.subtitles import Cue, SubtitleFiles, srt_text, subtitle_line, vtt_text
from vl2cli.tasks.plan import plan_files
from vl2cli.tasks.segmenting import Segmenting

FPS, SCENE_S, LENGTH_S = 4, 40.0, 300.0
SCENE_FRAMES = int(SCENE_S * FPS)
AV_FIXTURE = "siglip-qwen2-av"
needs_av_fixture = pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir(),
                                      reason=f"reference fixture {AV_FIXTURE} not found")
REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=4, modality="auto")


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_video(tmp_path_factory.mktemp("long") / "long.mp4", seconds=LENGTH_S, fps=FPS,
                             scene_seconds=SCENE_S, with_audio=True)


@pytest.fixture(scope="module")
def silent_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scene_video(tmp_path_factory.mktemp("silent") / "silent.mp4", seconds=130.0, fps=FPS,
                             scene_seconds=SCENE_S)


# ------------------------------------------------------------------ windows (pure)
def test_fixed_windows_cover_the_file_with_overlap_and_no_sliver_at_the_end() -> None:
    plain = fixed_windows(300.0, 60.0)
    assert [(s.start_s, s.end_s) for s in plain] == [(0, 60), (60, 120), (120, 180), (180, 240), (240, 300)]
    assert [s.index for s in plain] == list(range(5)) and {s.count for s in plain} == {5}
    overlapped = fixed_windows(300.0, 60.0, 10.0)
    assert [s.start_s for s in overlapped] == [0, 50, 100, 150, 200, 250]
    assert overlapped[-1].end_s == 300.0 and all(b.start_s < a.end_s for a, b in zip(overlapped, overlapped[1:]))
    assert [(s.start_s, s.end_s) for s in fixed_windows(120.4, 60.0)] == [(0, 60), (60, 120.4)]  # 0.4 s tail merged
    assert [(s.start_s, s.end_s) for s in fixed_windows(20.0, 60.0)] == [(0, 20)]
    with pytest.raises(Vl2Error):
        fixed_windows(300.0, 60.0, 60.0)


def test_scene_windows_keep_between_min_and_max() -> None:
    cuts = [40.0, 41.0, 80.0, 200.0]  # a 1 s flash at 40 s, then a 120 s scene
    windows = scene_windows(cuts, 300.0, min_s=2.0, max_s=60.0)
    bounds = [(w.start_s, w.end_s) for w in windows]
    assert bounds == [(0, 41), (41, 80), (80, 140), (140, 200), (200, 250), (250, 300)]  # the flash joins the scene before
    assert all(2.0 <= e - s <= 60.0 for s, e in bounds)
    assert [(w.start_s, w.end_s) for w in scene_windows([0.5], 10.0, 2.0, 60.0)] == [(0, 10)]  # short first scene joins


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1m30s", 90), ("90", 90), ("1:30", 90),
                                           ("1:00:00", 3600), ("500ms", 0.5), ("1h", 3600)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "30x", "-5s", "0"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(Vl2Error):
        parse_duration(text)


def test_segmenting_labels_tell_rules_apart() -> None:
    assert Segmenting.parse("60s").by == "60s"
    assert Segmenting.parse("1m", overlap="10s").by == "60s overlap 10s"
    assert Segmenting.parse("scenes", min_length="3s", max_length="2m").by == "scenes 3s-120s"
    with pytest.raises(Vl2Error):
        Segmenting.parse("30s", overlap="30s")


# ------------------------------------------------------------------ scenes and what a segment decodes
def test_scene_cuts_are_found_within_a_frame_of_where_they_were_made(long_video: Path) -> None:
    found = detect_scene_cuts(str(long_video))
    made = [k * SCENE_S for k in range(1, int(LENGTH_S // SCENE_S) + 1) if k * SCENE_S < LENGTH_S]
    assert len(found.cuts_s) == len(made)
    for cut, expected in zip(found.cuts_s, made):
        assert abs(cut - expected) <= 1.0 / FPS
    assert found.duration_s == pytest.approx(LENGTH_S, abs=1.0 / FPS)


def test_each_segment_decodes_frames_of_its_own_window_and_scene(long_video: Path) -> None:
    """Scene segments: the sampled indices are upstream's `s`/`e` clip sampling, inside the window, and
    the decoded pictures are that scene's colour."""
    segments = Segmenting.parse("scenes").cut(str(long_video))
    assert [(s.start_s, s.end_s) for s in segments] == [(k * SCENE_S, min((k + 1) * SCENE_S, LENGTH_S))
                                                        for k in range(8)]
    total = int(LENGTH_S * FPS)
    for segment in segments:
        expected = sample_frame_indices(total, FPS, 16, segment.start_s, segment.end_s)
        window = clip_frame_range(total, FPS, segment.start_s, segment.end_s)
        decoded = decode_video_frames(str(long_video), lambda n, fps: sample_frame_indices(n, fps, 16, segment.start_s,
                                                                                          segment.end_s))
        assert decoded.indices == expected and all(window.start <= i < window.stop for i in expected)
        assert window.start == max(int(segment.start_s * FPS) - 1, 0)  # upstream's off-by-one, kept
        for index, frame in zip(decoded.indices, decoded.frames):
            colour = np.array(SCENE_COLOURS[scene_of_frame(index, SCENE_FRAMES) % len(SCENE_COLOURS)])
            corner = frame[:4, :4].reshape(-1, 3).mean(axis=0)  # away from the drifting square
            assert np.abs(corner - colour).max() < 16, (segment, index, corner, colour)
            assert scene_of_frame(index, SCENE_FRAMES) == segment.index or index == window.start


def test_a_segment_hears_its_own_window(long_video: Path) -> None:
    """The windowed decode (seek + preroll) gives the whole track's samples for that window."""
    whole = decode_audio_track_16k_mono(str(long_video)).astype(np.int32)
    for start, end in [(0.0, 60.0), (60.0, 120.0), (117.3, 178.9), (280.0, 300.0)]:
        window = decode_audio_window_16k_mono(str(long_video), start, end).astype(np.int32)
        reference = whole[int(start * 16000):int(end * 16000)]
        assert window.shape == reference.shape
        assert np.abs(window - reference).max() <= 64  # the tone's amplitude is ~9800: a shift would be thousands
    spec = MediaSpec(num_frames=4, image=None, want_audio=True)
    first, later = (load_media(long_video, Clip(str(long_video), s, s + 40.0).spec_for(spec)).fbank for s in (0.0, 40.0))
    assert not np.allclose(first.numpy(), later.numpy(), atol=1.0)  # scene 0 and scene 1 have other tones


# ------------------------------------------------------------------ planning and resume keys
def _planned(paths: list[Path], segmenting: Segmenting, index: ResumeIndex | None = None) -> list[Any]:
    return list(plan_files(paths, REQUEST, index.is_done if index else None, segmenting=segmenting,
                           known_segments=index.known_segments if index else None))


def test_an_undecodable_file_is_one_error_record(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video")
    planned = _planned([broken], Segmenting.parse("60s"))
    assert len(planned) == 1 and not planned[0].pending
    record = planned[0].outcome.record
    assert record["error"]["code"] == "unsupported_media" and record["segment"] is None
    jsonschema.Draft202012Validator(load_schema()).validate(record)


def test_a_half_done_file_resumes_at_its_unfinished_segments(silent_video: Path, monkeypatch) -> None:
    segmenting = Segmenting.parse("60s")
    planned = _planned([silent_video], segmenting)
    assert [p.segment["index"] for p in planned] == [0, 1, 2] and all(p.pending for p in planned)
    stamp = FileStamp.of(silent_video)
    index = ResumeIndex()
    index.add(build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version=__version__, output="x",
                           modality="video", segment=planned[0].segment))
    again = _planned([silent_video], segmenting, index)
    assert [(p.segment["index"], p.pending) for p in again] == [(0, False), (1, True), (2, True)]
    for p in again[1:]:
        index.add(build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version=__version__, output="y",
                               modality="video", segment=p.segment))

    def no_cutting(self, path):
        raise AssertionError("a finished file was cut again")

    monkeypatch.setattr(Segmenting, "cut", no_cutting)
    done = _planned([silent_video], segmenting, index)
    assert [p.pending for p in done] == [False] * 3  # known from the records: no probe, no scene detection
    other_rule = Segmenting.parse("30s")  # another rule is other work
    assert index.known_segments(resume_key(stamp, REQUEST), other_rule.by) is None


def test_segment_records_have_keys_of_their_own() -> None:
    stamp = FileStamp("/a.mp4", 10, 20)
    segment = {"index": 1, "start_s": 60.0, "end_s": 120.0, "count": 5, "by": "60s"}
    record = build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="x", segment=segment)
    whole = build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="x")
    assert key_of_record(record) == resume_key(stamp, REQUEST, segment) != key_of_record(whole)
    assert key_of_record(whole) == resume_key(stamp, REQUEST)
    assert record["schema_version"] == 3 and record["segment"] == segment and whole["segment"] is None


# ------------------------------------------------------------------ subtitles
def test_subtitle_formats() -> None:
    cues = [Cue(0.0, 60.0, "a dog\n\nruns"), Cue(3600.5, 3661.25, "a cat")]
    assert srt_text(cues) == ("1\n00:00:00,000 --> 00:01:00,000\na dog\nruns\n\n"
                              "2\n01:00:00,500 --> 01:01:01,250\na cat\n")
    assert vtt_text(cues).startswith("WEBVTT\n\n00:00:00.000 --> 00:01:00.000\na dog\nruns\n\n01:00:00.500 -->")
    line = subtitle_line({"segment": {"start_s": 60.0, "end_s": 120.0}, "error": None, "output": "a dog\nruns"})
    assert line == "[00:01:00.000 - 00:02:00.000] a dog runs"


def test_subtitle_files_fill_in_segments_from_earlier_records(tmp_path: Path) -> None:
    from vl2cli.output.record import Request, build_record

    def record(index: int, text: str) -> dict:  # as a run writes it (the earlier output is read through the schema)
        request = Request("caption", None, None, "m", None, 4, "auto")
        return build_record(request, path="/v/long.mp4", stamp=None, vl2_version="0", output=text, modality="video",
                            segment={"index": index, "start_s": 60.0 * index, "end_s": 60.0 * index + 60, "count": 3,
                                     "by": "60s"})

    earlier = tmp_path / "out.jsonl"
    earlier.write_text(json.dumps(record(0, "zero")) + "\n")
    files = SubtitleFiles("srt", out_dir=tmp_path / "subs", earlier=earlier)
    files.add("/v/long.mp4", None)  # segment 0: skipped, done before
    files.add("/v/long.mp4", record(1, "one"))
    files.add("/v/long.mp4", record(2, "two"))
    files.close()
    text = (tmp_path / "subs" / "long.srt").read_text()
    assert [line for line in text.splitlines() if line.isalpha()] == ["zero", "one", "two"]


# ------------------------------------------------------------------ with the tiny model
@pytest.fixture(scope="module")
def av_model() -> Iterator[Any]:
    from vl2cli import api

    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield api.load_model(str(fixture.checkpoint), encoder_backend="torch")


@pytest.mark.slow
@needs_av_fixture
def test_batched_segments_of_several_files_equal_one_at_a_time(av_model, long_video: Path, silent_video: Path) -> None:
    from vl2cli import api

    files = [long_video, silent_video]
    batched = api.caption(av_model, files, segment="60s", max_new_tokens=4, batch_size=3, workers=1)
    alone = api.caption(av_model, files, segment="60s", max_new_tokens=4, batch_size=1, workers=1)
    assert [(Path(r["path"]).name, r["segment"]["index"]) for r in batched] == \
        [("long.mp4", i) for i in range(5)] + [("silent.mp4", i) for i in range(3)]
    # batches of 3 over 5 + 3 segments: the second batch holds long.mp4's last two and silent.mp4's first
    mixed = batched[3:6]
    assert {r["timings_ms"]["batch_size"] for r in mixed} == {3} and len({r["timings_ms"]["model"] for r in mixed}) == 1
    assert [r["output"] for r in batched] == [r["output"] for r in alone]
    assert all(r["error"] is None for r in batched)
    assert len({r["output"] for r in batched if Path(r["path"]).name == "long.mp4"}) > 1  # segments differ


def _vl2(*args: str) -> list[str]:
    fixture = reference_root() / AV_FIXTURE
    return [sys.executable, "-m", "vl2cli.cli", *args, "--model", str(fixture / "checkpoint"), "--max-new-tokens", "3"]


def _env() -> dict[str, str]:
    fixture = reference_root() / AV_FIXTURE
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(HF_HUB_CACHE=str(fixture / "hub"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]))
    return env


@pytest.mark.slow
@needs_av_fixture
def test_a_run_killed_mid_file_resumes_at_the_next_segment(long_video: Path, tmp_path: Path) -> None:
    out, subs = tmp_path / "out.jsonl", tmp_path / "subs"
    args = _vl2("caption", str(long_video), "--segment", "30s", "--out", str(out), "--batch-size", "1",
                "--workers", "1", "--quiet", "--format", "srt", "--out-dir", str(subs))
    first = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        import time

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.02)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    written = [json.loads(line) for line in out.read_text().splitlines() if line.strip().endswith("}")]
    assert 1 <= len(written) < 10, "the run was not killed mid-file"
    rerun = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    validator = jsonschema.Draft202012Validator(load_schema())
    for record in records:
        validator.validate(record)
    assert sorted(r["segment"]["index"] for r in records) == list(range(10))  # every segment exactly once
    assert {(r["segment"]["count"], r["segment"]["by"]) for r in records} == {(10, "30s")}
    assert f"{10 - len(written)} done, {len(written)} skipped" in rerun.stderr
    cues = [line for line in (subs / "long.srt").read_text().splitlines() if " --> " in line]
    assert len(cues) == 10 and cues[0] == "00:00:00,000 --> 00:00:30,000"  # the earlier run's segments too


@pytest.mark.slow
@needs_av_fixture
def test_on_a_terminal_a_segmented_caption_reads_like_a_subtitle_list(silent_video: Path) -> None:
    import pty

    master, slave = pty.openpty()
    run = subprocess.Popen(_vl2("caption", str(silent_video), "--segment", "60s", "--workers", "1", "--quiet"),
                           env=_env(), stdout=slave, stderr=subprocess.PIPE, text=False)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the run is over
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    stderr = run.communicate(timeout=600)[1].decode()
    assert run.returncode == 0, stderr
    lines = [line for line in shown.decode("utf-8", "replace").replace("\r", "").splitlines() if line.strip()]
    assert [line[:29] for line in lines] == ["[00:00:00.000 - 00:01:00.000]", "[00:01:00.000 - 00:02:00.000]",
                                            "[00:02:00.000 - 00:02:10.000]"]
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON on a terminal
    assert "3 segments: 3 done" in stderr


def test_subtitle_files_go_beside_the_input_by_default(tmp_path: Path) -> None:
    source = tmp_path / "talk.mp4"
    record = {"path": str(source), "error": None, "output": "hello",
              "segment": {"index": 0, "start_s": 0.0, "end_s": 30.0, "count": 1, "by": "30s"}}
    files = SubtitleFiles("vtt")
    files.add(source, record)
    files.close()
    assert (tmp_path / "talk.vtt").read_text() == "WEBVTT\n\n00:00:00.000 --> 00:00:30.000\nhello\n"


def test_segments_on_the_ray_engine_are_refused_clearly() -> None:
    """Ray actors are handed whole files keyed by path: segments of one file would overwrite each other."""
    from vl2cli.errors import Vl2Error
    from vl2cli.runners.engines import engine_runner
    from vl2cli.settings import Settings

    with pytest.raises(Vl2Error, match="local engine only"):
        with engine_runner(Settings(engine="ray", segment="30s")):
            pass
