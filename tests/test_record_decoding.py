"""Records name the video decoder and the audio stream (issue 20), optionally: old records stay valid."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from media_helpers import synth
from reference_fixtures import offline_fixture_hub, reference_root
from vl2cli import api
from vl2cli.output import load_schema
from vl2cli.output.record import FileStamp, Request, build_record
from vl2cli.tasks.pipeline import run_task
from vl2cli.tasks.spec import RunOptions, TaskSpec

AV_FIXTURE = "siglip-qwen2-av"
REQUEST = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=8, modality="auto")
VALIDATOR = jsonschema.Draft202012Validator(load_schema())


def test_decoding_is_optional_and_validated(tmp_path: Path) -> None:
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"x")
    stamp = FileStamp.of(media)
    record = build_record(REQUEST, path=stamp.path, stamp=stamp, vl2_version="0", output="a", modality="av",
                          decoding={"video_backend": "pyav", "video_rotation": 270, "audio_stream": 2})
    VALIDATOR.validate(record)
    older = dict(record)
    del older["decoding"]
    VALIDATOR.validate(older)  # a record of an older vl2
    assert not VALIDATOR.is_valid({**record, "decoding": {"video_backend": "opencv"}})


@pytest.fixture(scope="module")
def av_model() -> Iterator[Any]:
    if not (reference_root() / AV_FIXTURE).is_dir():
        pytest.skip(f"reference fixture {AV_FIXTURE} not found")
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield api.load_model(str(fixture.checkpoint), encoder_backend="torch")


def test_records_name_the_backend_and_the_stream_heard(av_model, tmp_path: Path) -> None:
    plain = synth.write_video(tmp_path / "plain.mp4", frames=50, with_audio=True)
    dvd = synth.write_av_tracks(tmp_path / "dvd.vob", container_format="vob", video_codec="mpeg2video",
                                audio_codec="mp2", seconds=2.0)
    dub = synth.write_av_tracks(tmp_path / "dub.mkv", container_format="matroska", seconds=2.0,
                                tracks=((300.0, False, 0.0), (1000.0, True, 0.0)))
    records = {Path(o.record["path"]).name: o.record
               for o in run_task(av_model, [plain, dvd, dub], TaskSpec("caption", max_new_tokens=1),
                                 RunOptions(batch_size=1, workers=0))}
    for record in records.values():
        assert record["error"] is None, record["error"]
        VALIDATOR.validate(record)
    assert records["plain.mp4"]["decoding"] == {"video_backend": "decord", "video_rotation": 0, "audio_stream": 1}
    assert records["dvd.vob"]["decoding"]["video_backend"] == "pyav"
    assert any("not decord" in note for note in records["dvd.vob"]["notes"])
    assert records["dub.mkv"]["decoding"]["audio_stream"] == 2
    assert records["dub.mkv"]["media"]["audio_channels"] == 1


def test_segments_past_the_pictures_or_past_a_vfr_files_average_rate_are_not_errors(av_model, tmp_path: Path) -> None:
    """Issue 20: a long sound's video-less windows are heard; a VFR MKV's last window shows its last frame."""
    from vl2cli.tasks.segmenting import Segmenting

    long_sound = synth.write_av_tracks(tmp_path / "long_sound.mkv", container_format="matroska", seconds=6.0,
                                       video_seconds=2.0)
    vfr = synth.write_vfr_mkv(tmp_path / "vfr.mkv")
    options = RunOptions(batch_size=1, workers=0, segmenting=Segmenting.parse("2s"))
    records = [o.record for o in run_task(av_model, [long_sound, vfr], TaskSpec("caption", max_new_tokens=1), options)]
    by_file: dict[str, list[dict]] = {}
    for record in records:
        VALIDATOR.validate(record)
        by_file.setdefault(Path(record["path"]).name, []).append(record)
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    sound = sorted(by_file["long_sound.mkv"], key=lambda r: r["segment"]["index"])
    # [2, 4) still holds frame 49 (upstream maps 2 s to int(2·25) − 1); [4, 6) lies after the pictures
    assert [r["modality"] for r in sound] == ["av", "av", "audio"]
    assert "only its sound was used" in " ".join(sound[-1]["notes"])
    assert sound[-1]["decoding"] == {"video_backend": None, "video_rotation": None, "audio_stream": 1}
    last = max(by_file["vfr.mkv"], key=lambda r: r["segment"]["index"])
    assert "its last frame was shown" in " ".join(last["notes"])
