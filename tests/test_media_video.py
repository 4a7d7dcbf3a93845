"""Decoded frames: same indices, counts and uint8 values as upstream's decord reader, for both backends."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from safetensors.numpy import load_file

from media_helpers import synth
from media_helpers.fixtures import GOLDEN, golden_json, goldens_of_kind, media_path
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.media.video import decode_video_frames

VIDEOS = [s for s in goldens_of_kind("video") if "decord" in golden_json(s)]
BACKENDS = ("decord", "pyav")


def _sha256(frame: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stem", VIDEOS)
def test_frames_identical_to_decord_goldens(stem: str, backend: str) -> None:
    meta = golden_json(stem)
    for num_frames in meta["frame_sha256"]:
        decoded = decode_video_frames(str(media_path(stem)),
                                      lambda total, fps: sample_frame_indices(total, fps, int(num_frames)), backend)
        assert decoded.backend == backend
        assert decoded.total_frames == meta["decord"]["num_frames"]
        assert decoded.avg_fps == pytest.approx(meta["decord"]["avg_fps"], rel=1e-12)
        assert decoded.indices == meta["frame_indices"][num_frames]
        assert decoded.frames.shape[1:3] == tuple(meta["decord"]["frame_hw"])
        assert [_sha256(f) for f in decoded.frames] == meta["frame_sha256"][num_frames]


@pytest.mark.parametrize("stem", VIDEOS)
def test_stored_frames_equal(stem: str) -> None:
    stored = load_file(GOLDEN / f"{stem}.safetensors")["frames_nf4_u8"]
    decoded = decode_video_frames(str(media_path(stem)), lambda total, fps: sample_frame_indices(total, fps, 4))
    np.testing.assert_array_equal(decoded.frames[: stored.shape[0]], stored)


def test_pyav_counts_frames_as_decord_does_when_the_header_claims_more(tmp_path) -> None:
    """decord counts the packets it indexes, not the AVI header's promise; the fallback must sample the
    same indices or the two backends see different frames of the same file."""
    import av

    path = synth.write_avi_claiming_more_frames(tmp_path / "capture.avi", frames=60, claimed=62)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 62  # the header's claim
    plan = lambda total, fps: sample_frame_indices(total, fps, 8)  # noqa: E731
    by_decord = decode_video_frames(str(path), plan, "decord")
    by_pyav = decode_video_frames(str(path), plan, "pyav")
    assert by_decord.total_frames == by_pyav.total_frames == 60
    assert by_pyav.indices == by_decord.indices
    assert np.array_equal(by_pyav.frames, by_decord.frames)
