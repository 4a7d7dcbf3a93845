"""Issue 20: where decord (upstream's reader) seeks wrongly, vl2 shows the frames a player shows.

Each file is made with PyAV's bundled encoders; the reference is `synth.player_frames` (PyAV decoding
every frame in order). The goldens in test_media_video.py keep decord for well-formed MP4/WebM.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media_helpers import synth
from vl2cli.errors import UnsupportedMediaError
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.media.video import decode_video_frames, decord_misreads

PLAN16 = lambda total, fps: sample_frame_indices(total, fps, 16)  # noqa: E731

#: (file name, codec, container, encoder options): the formats issue 20 found decord wrong on.
ARCHIVE_FORMATS = [
    ("mpeg2.ts", "mpeg2video", "mpegts", {"g": "12", "bf": "2"}),
    ("mpeg2.vob", "mpeg2video", "vob", {"g": "12", "bf": "2"}),
    ("wmv2.wmv", "wmv2", "asf", {"g": "12"}),
    ("xvid.avi", "mpeg4", "avi", {"g": "12", "bf": "2"}),
    ("open_gop.mkv", "libx264", "matroska", {"g": "12", "bf": "3", "x264-params": "open-gop=1:keyint=12"}),
]


def _assert_player_frames(path: Path, decoded, rotation_turns: int = 0) -> None:
    reference = synth.player_frames(path)
    assert decoded.total_frames == len(reference)
    for frame, index in zip(decoded.frames, decoded.indices):
        np.testing.assert_array_equal(frame, np.rot90(reference[index], rotation_turns))


@pytest.mark.parametrize(("name", "codec", "container", "options"), ARCHIVE_FORMATS,
                         ids=[f[0] for f in ARCHIVE_FORMATS])
def test_archive_formats_show_the_players_frames(tmp_path: Path, name: str, codec: str, container: str,
                                                 options: dict[str, str]) -> None:
    path = synth.write_gop_video(tmp_path / name, codec, container, options=options)
    assert decord_misreads(str(path))
    decoded = decode_video_frames(str(path), PLAN16)
    assert decoded.backend == "pyav"
    assert "not decord" in decoded.notes[0] and "deliberate divergence" in decoded.notes[0]
    _assert_player_frames(path, decoded)


def test_decord_really_misreads_mpeg2_ts(tmp_path: Path) -> None:
    """Why the rule exists: decord's own frames at the sampled indices are not the player's."""
    from vl2cli.media.video import decode_with_decord

    path = synth.write_gop_video(tmp_path / "mpeg2.ts", "mpeg2video", "mpegts", options={"g": "12", "bf": "2"})
    reference = synth.player_frames(path)
    by_decord = decode_with_decord(str(path), PLAN16)
    wrong = [i for i, f in zip(by_decord.indices, by_decord.frames) if not np.array_equal(f, reference[i])]
    assert len(wrong) >= 8


def test_mp4_edit_list_hidden_frames_are_not_counted(tmp_path: Path) -> None:
    source = synth.write_gop_video(tmp_path / "src.mp4", "libx264", "mp4", options={"g": "25", "bf": "2"})
    trimmed = synth.remux_shifted(source, tmp_path / "trimmed.mp4", 0.6)  # 15 frames hidden, not on a keyframe
    assert "edit list" in decord_misreads(str(trimmed))
    decoded = decode_video_frames(str(trimmed), PLAN16)
    assert decoded.backend == "pyav" and decoded.total_frames == 60
    _assert_player_frames(trimmed, decoded)


def test_matroska_without_timestamps_decodes_every_frame(tmp_path: Path) -> None:
    """Negative timestamps remuxed into Matroska come out with none at all (FFmpeg's muxer); decord
    misplaces its frames, and PyAV's path used to seek back to 0 after counting, which landed late."""
    source = synth.write_gop_video(tmp_path / "src.mp4", "libx264", "mp4", options={"g": "25", "bf": "2"})
    shifted = synth.remux_shifted(source, tmp_path / "negative.mkv", 0.6, "matroska",
                                  {"avoid_negative_ts": "disabled"})
    assert "no timestamps" in decord_misreads(str(shifted))
    for backend in ("decord", "pyav"):
        decoded = decode_video_frames(str(shifted), PLAN16, backend)
        assert decoded.backend == "pyav"
        _assert_player_frames(shifted, decoded)


@pytest.mark.parametrize("name", ["plain.mp4", "closed_gop.mkv"])
def test_well_formed_h264_stays_on_decord(tmp_path: Path, name: str) -> None:
    path = synth.write_gop_video(tmp_path / name, "libx264", options={"g": "25", "bf": "2"})
    assert decord_misreads(str(path)) is None
    decoded = decode_video_frames(str(path), PLAN16)
    assert decoded.backend == "decord" and decoded.notes == []
    _assert_player_frames(path, decoded)


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1"])
def test_pyav_applies_the_display_rotation(tmp_path: Path, codec: str) -> None:
    """A phone video (display matrix: turn 90° clockwise) is shown upright, as decord and players do."""
    source = synth.write_video(tmp_path / "src.mp4", codec=codec, frames=10, width=96, height=64)
    rotated = synth.rotate_mp4(source, tmp_path / "rotated.mp4")
    decoded = decode_video_frames(str(rotated), PLAN16, "pyav")
    assert decoded.rotation == 270  # counter-clockwise degrees: 90° clockwise
    assert decoded.frames.shape[1:3] == (96, 64)
    assert any("rotation 270" in note for note in decoded.notes)
    _assert_player_frames(rotated, decoded, rotation_turns=-1)


def test_a_stream_without_decoder_is_unsupported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg demuxes codecs this build cannot decode; PyAV then has no codec context (AttributeError)."""
    import av.video.stream

    path = synth.write_video(tmp_path / "clip.mp4", frames=5)
    monkeypatch.setattr(av.video.stream.VideoStream, "codec_context", property(lambda self: None), raising=False)
    with pytest.raises(UnsupportedMediaError, match="no decoder"):
        decode_video_frames(str(path), PLAN16, "pyav")


def test_probe_calls_a_file_without_decodable_streams_unsupported(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import av.video.stream

    from vl2cli.media.probe import probe_media

    path = synth.write_video(tmp_path / "clip.mp4", frames=5)
    monkeypatch.setattr(av.video.stream.VideoStream, "codec_context", property(lambda self: None), raising=False)
    with pytest.raises(UnsupportedMediaError, match="no decoder"):
        probe_media(path)


def test_decord_turns_a_phone_video_itself_and_the_rotation_is_reported(tmp_path: Path) -> None:
    source = synth.write_video(tmp_path / "src.mp4", frames=10, width=96, height=64)
    rotated = synth.rotate_mp4(source, tmp_path / "rotated.mp4")
    by_decord = decode_video_frames(str(rotated), PLAN16)
    by_pyav = decode_video_frames(str(rotated), PLAN16, "pyav")
    assert by_decord.backend == "decord" and by_decord.rotation == by_pyav.rotation == 270
    np.testing.assert_array_equal(by_decord.frames, by_pyav.frames)


def test_a_transport_stream_whose_timestamps_wrap(tmp_path: Path) -> None:
    """33-bit MPEG-TS clocks wrap after 26.5 h; a recording made across it used to be corrupt_media."""
    import av

    path = tmp_path / "wrap.ts"
    with av.open(str(path), "w", format="mpegts", container_options={"output_ts_offset": "95442"}) as out:
        video = out.add_stream("mpeg2video", rate=synth.FRAME_RATE)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.options = {"g": "12"}
        for index in range(100):
            out.mux(video.encode(av.VideoFrame.from_ndarray(synth._moving_gradient(index, 96, 64), format="rgb24")))
        out.mux(video.encode(None))
    decoded = decode_video_frames(str(path), PLAN16)
    assert decoded.backend == "pyav"
    _assert_player_frames(path, decoded)


def test_an_mpeg1_elementary_stream(tmp_path: Path) -> None:
    path = synth.write_gop_video(tmp_path / "raw.m1v", "mpeg1video", "mpeg1video", options={"g": "12"})
    decoded = decode_video_frames(str(path), PLAN16)
    assert decoded.backend == "pyav"
    _assert_player_frames(path, decoded)


def test_an_av1_mp4_with_an_edit_list(tmp_path: Path) -> None:
    """decord cannot read AV1 (PyAV decodes it); the edit list's hidden frames used to be counted and the
    file called corrupt_media."""
    source = synth.write_gop_video(tmp_path / "src.mp4", "libsvtav1", "mp4", frames=40)
    trimmed = synth.remux_shifted(source, tmp_path / "trimmed.mp4", 0.6)
    decoded = decode_video_frames(str(trimmed), PLAN16)
    assert decoded.backend == "pyav" and decoded.total_frames == 25
    _assert_player_frames(trimmed, decoded)
