"""Decoding the sampled frames of a video: decord (upstream's reader) first, PyAV where decord fails.

Both backends report decord's frame count and average fps so the sampled indices are the same
whichever one decoded the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import av
import numpy as np

from vl2cli.errors import CorruptMediaError, NoVideoStreamError

VideoBackend = Literal["decord", "pyav"]
#: Upstream (audio_visual branch) opens decord with one thread. vl2 passes the file's thread budget
#: instead (frame-threaded H.264/VP9 decoding gives the same frames); 1 inside a pool of workers.
DECORD_THREADS = 1
#: Exact RGB conversion: the goldens' decord frames equal the FFmpeg CLI's default (bicubic) swscale.
_PYAV_RGB_INTERPOLATION = "BICUBIC"

#: Maps (total frame count, average fps) to the absolute indices to decode.
IndexPlanner = Callable[[int, float], list[int]]


@dataclass
class DecodedVideo:
    """RGB frames at the sampled indices, and the stream facts the indices were computed from."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    indices: list[int]
    total_frames: int
    avg_fps: float
    backend: VideoBackend


def decode_with_decord(path: str, plan: IndexPlanner, threads: int = DECORD_THREADS) -> DecodedVideo:
    """Upstream's reader: `len(vr)` frames, `get_avg_fps()`, random access with `get_batch`."""
    import decord  # imported lazily: loading its native library is slow and it is optional at runtime

    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    try:
        total, fps = len(reader), float(reader.get_avg_fps())
        indices = plan(total, fps)
        frames = reader.get_batch(indices).asnumpy()
    finally:
        del reader
    return DecodedVideo(frames=frames, indices=indices, total_frames=total, avg_fps=fps, backend="decord")


def _decord_compatible_frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """decord's `len(vr)`: the number of packets the stream demuxes into (decord indexes every packet
    when it opens a file and counts those, never the header's claim).

    Why not `stream.frames`: a header can promise frames that are not there (an MPEG-4 Part 2 AVI
    claiming 257 of its 255 frames); the sampled indices would then differ from decord's. PyAV ends a
    demux with an empty flush packet (no data, no timestamps), which is not counted.
    """
    count = sum(1 for packet in container.demux(stream)
                if packet.size or packet.pts is not None or packet.dts is not None)
    container.seek(0)
    return count


def decode_with_pyav(path: str, plan: IndexPlanner, threads: int = DECORD_THREADS) -> DecodedVideo:
    """Sequential decode keeping only the wanted frames (PyAV cannot seek to an exact frame cheaply)."""
    with av.open(path) as container:
        if not container.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream", path=path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        total = _decord_compatible_frame_count(container, stream)
        fps = float(stream.average_rate or stream.base_rate or 0)
        indices = plan(total, fps)
        wanted = set(indices)
        last = max(indices)
        by_index: dict[int, np.ndarray] = {}
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                by_index[position] = frame.to_ndarray(format="rgb24", interpolation=_PYAV_RGB_INTERPOLATION)
            if position >= last:
                break
    missing = sorted(wanted - by_index.keys())
    if missing:
        raise CorruptMediaError(f"{path}: the stream ended before frame {missing[0]} of {total}", path=path)
    frames = np.stack([by_index[i] for i in indices])
    return DecodedVideo(frames=frames, indices=indices, total_frames=total, avg_fps=fps, backend="pyav")


def decode_video_frames(path: str, plan: IndexPlanner, backend: VideoBackend = "decord", *,
                        threads: int = DECORD_THREADS) -> DecodedVideo:
    """Decode the planned frames; with backend "decord", fall back to PyAV for files decord cannot read.

    `threads`: decoder threads (the frames do not depend on it).
    """
    if backend == "decord":
        try:
            return decode_with_decord(path, plan, threads)
        except CorruptMediaError:
            raise
        except Exception:  # decord raises bare RuntimeError/DECORDError for codecs it lacks (e.g. AV1)
            pass
    try:
        return decode_with_pyav(path, plan, threads)
    except (av.error.FFmpegError, ValueError) as exc:
        raise CorruptMediaError(f"{path}: the video stream cannot be decoded ({exc})", path=path) from exc
