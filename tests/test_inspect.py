"""`vl2 inspect`: the frames and sound the model is given, written out and compared with a player's decode."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from media_helpers import synth
from vl2cli.cli import app
from vl2cli.media.audio import decode_audio_track_16k_mono

RUNNER = CliRunner()


def _inspect(*args: str) -> dict:
    result = RUNNER.invoke(app, ["inspect", *args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "inspect.json").read_text())


def _wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as handle:
        assert (handle.getnchannels(), handle.getsampwidth(), handle.getframerate()) == (1, 2, 16000)
        return np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")


def test_inspect_writes_the_players_frames_and_the_heard_track(tmp_path: Path) -> None:
    path = synth.write_av_tracks(tmp_path / "dvd.vob", container_format="vob", video_codec="mpeg2video",
                                 audio_codec="mp2", seconds=3.0, video_options={"g": "12", "bf": "2"})
    out = tmp_path / "seen"
    seen = _inspect(str(path), "--out", str(out), "--frames", "6")
    assert seen["path"] == str(path.resolve()) and seen["media"]["kind"] == "video"
    assert seen["video"]["backend"] == "pyav" and seen["video"]["rotation"] == 0
    assert any("not decord" in note for note in seen["notes"])
    reference = synth.player_frames(path)
    assert len(seen["video"]["frames"]) == 6
    for frame in seen["video"]["frames"]:
        assert not Path(frame["png"]).is_absolute()
        np.testing.assert_array_equal(np.asarray(Image.open(out / frame["png"])), reference[frame["index"]])
        assert frame["time_s"] == pytest.approx(frame["index"] / synth.FRAME_RATE)
    audio = seen["audio"]
    assert audio["stream_index"] == 1 and audio["sample_rate"] == 16000
    pcm = _wav(out / audio["wav"])
    assert audio["samples"] == pcm.shape[0]
    np.testing.assert_array_equal(pcm, decode_audio_track_16k_mono(str(path)))


def test_inspect_shows_a_phone_video_upright(tmp_path: Path) -> None:
    source = synth.write_video(tmp_path / "src.mp4", codec="libsvtav1", frames=10, width=96, height=64)
    rotated = synth.rotate_mp4(source, tmp_path / "phone.mp4")
    out = tmp_path / "seen"
    seen = _inspect(str(rotated), "--out", str(out), "--frames", "2")
    assert seen["video"]["rotation"] == 270 and seen["audio"] is None
    first = np.asarray(Image.open(out / seen["video"]["frames"][0]["png"]))
    assert first.shape == (96, 64, 3)
    np.testing.assert_array_equal(first, np.rot90(synth.player_frames(rotated)[seen["video"]["frames"][0]["index"]], -1))


def test_inspect_with_segments_and_the_default_track(tmp_path: Path) -> None:
    path = synth.write_av_tracks(tmp_path / "dub.mkv", container_format="matroska", seconds=4.0,
                                 tracks=((300.0, False, 0.0), (1000.0, True, 0.0)))
    out = tmp_path / "seen"
    seen = _inspect(str(path), "--out", str(out), "--frames", "2", "--segment", "2s")
    assert seen["video"] is None and [s["index"] for s in seen["segments"]] == [0, 1]
    for segment in seen["segments"]:
        for frame in segment["video"]["frames"]:
            assert segment["start_s"] * 25 - 1 <= frame["index"] < segment["end_s"] * 25
            assert (out / frame["png"]).is_file()
    assert seen["audio"]["stream_index"] == 2
    assert synth.dominant_hertz(_wav(out / "audio_16k.wav")[8000:24000]) == pytest.approx(1000.0, abs=2)
    assert any("2 audio tracks" in note for note in seen["notes"])


def test_inspect_an_image_and_a_broken_file(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(image)
    seen = _inspect(str(image), "--out", str(tmp_path / "a"))
    assert seen["video"]["backend"] == "pillow" and len(seen["video"]["frames"]) == 1
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    result = RUNNER.invoke(app, ["inspect", str(broken), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "not a video, image or audio file" in result.output


def test_inspect_takes_the_frame_count_from_the_model_config(tmp_path: Path) -> None:
    from reference_fixtures import offline_fixture_hub, reference_root
    from vl2cli.model.identity import CheckpointIdentity

    if not (reference_root() / "siglip-qwen2-av").is_dir():
        pytest.skip("reference fixture not found")
    path = synth.write_video(tmp_path / "clip.mp4", frames=40)
    with offline_fixture_hub("siglip-qwen2-av") as fixture:
        expected = CheckpointIdentity.resolve(str(fixture.checkpoint)).num_frames
        seen = _inspect(str(path), "--out", str(tmp_path / "seen"), "--model", str(fixture.checkpoint))
    assert len(seen["video"]["frames"]) == expected


def test_inspect_an_audio_file_writes_channel_0_at_16k(tmp_path: Path) -> None:
    path = synth.write_audio(tmp_path / "tone.wav", seconds=1.0, codec="pcm_s16le")
    seen = _inspect(str(path), "--out", str(tmp_path / "seen"))
    assert seen["video"] is None and seen["media"]["kind"] == "audio"
    pcm = _wav(tmp_path / "seen" / seen["audio"]["wav"])
    assert pcm.shape[0] == seen["audio"]["samples"] == 16000
    assert synth.dominant_hertz(pcm) == pytest.approx(440.0, abs=2)


def test_inspect_refuses_a_missing_file_and_an_out_of_range_frame_count(tmp_path: Path) -> None:
    missing = RUNNER.invoke(app, ["inspect", str(tmp_path / "absent.mp4"), "--out", str(tmp_path / "m")])
    assert missing.exit_code == 2 and "no such file" in missing.output and "removed after" not in missing.output
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((30, 40, 3), 200, np.uint8)).save(image)
    huge = RUNNER.invoke(app, ["inspect", str(image), "--out", str(tmp_path / "h"), "--frames", "1000000"])
    assert huge.exit_code == 2 and "at most 512" in huge.output and not (tmp_path / "h").exists()


def test_inspect_takes_its_options_from_the_settings_layers(tmp_path: Path) -> None:
    """inspect's options are settings: its --out and frames come from VL2_* and the config file too (a
    flag still wins); without --out in any layer it is refused, and VL2_MODEL (the runs' model) is not
    inspect's --model, which loads nothing by default."""
    video = synth.write_video(tmp_path / "clip.mp4", codec="libsvtav1", frames=10, width=96, height=64)
    config = tmp_path / "vl2.yaml"
    config.write_text("frames: 3\n")
    env = {"VL2_INSPECT_OUT": str(tmp_path / "from-env"), "VL2_MODEL": str(tmp_path / "no-such-checkpoint")}
    result = RUNNER.invoke(app, ["inspect", str(video), "--config", str(config)], env=env)
    assert result.exit_code == 0, result.output
    seen = json.loads((tmp_path / "from-env" / "inspect.json").read_text())
    assert len(seen["video"]["frames"]) == 3
    flagged = RUNNER.invoke(app, ["inspect", str(video), "--config", str(config), "--frames", "2", "-o",
                                  str(tmp_path / "flag")], env=env)
    assert flagged.exit_code == 0, flagged.output
    assert len(json.loads((tmp_path / "flag" / "inspect.json").read_text())["video"]["frames"]) == 2
    missing = RUNNER.invoke(app, ["inspect", str(video)], env={"VL2_INSPECT_OUT": None})
    assert missing.exit_code == 2 and "--out is required" in missing.output
