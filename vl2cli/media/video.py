"""Decoding the sampled frames of a video: decord (upstream's reader) first, PyAV where decord fails.

Both backends report decord's frame count and average fps so the sampled indices are the same
whichever one decoded the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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
    #: What the record should say about these frames (e.g. damaged packets replaced by neighbours).
    notes: list[str] = field(default_factory=list)


def _quiet_decord():
    """decord, imported lazily (loading its native library is slow), with its bundled FFmpeg's log off.

    Why: decord's FFmpeg prints every decoder complaint ("[h264 @ 0x…] Invalid NAL unit", hundreds per
    damaged file) straight to stderr, even under --quiet; what went wrong reaches the file's record instead.
    """
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    return decord


def decode_with_decord(path: str, plan: IndexPlanner, threads: int = DECORD_THREADS) -> DecodedVideo:
    """Upstream's reader: `len(vr)` frames, `get_avg_fps()`, random access with `get_batch`."""
    decord = _quiet_decord()
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)
    try:
        total, fps = len(reader), float(reader.get_avg_fps())
        indices = plan(total, fps)
        frames = reader.get_batch(indices).asnumpy()
    finally:
        del reader
    return DecodedVideo(frames=frames, indices=indices, total_frames=total, avg_fps=fps, backend="decord")


@dataclass
class _PacketIndex:
    """What decord learns by demuxing a stream once: how many frames, and each pts's frame index."""

    count: int
    index_of_pts: dict[int, int] | None  # None when some packet has no pts (then frames are counted)


def _index_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _PacketIndex:
    """decord's `len(vr)` and frame order: every packet the stream demuxes into, sorted by pts.

    Why not `stream.frames`: a header can promise frames that are not there (an MPEG-4 Part 2 AVI
    claiming 257 of its 255 frames); the sampled indices would then differ from decord's. PyAV ends a
    demux with an empty flush packet (no data, no timestamps), which is not counted.
    """
    pts: list[int | None] = [packet.pts for packet in container.demux(stream)
                             if packet.size or packet.pts is not None or packet.dts is not None]
    container.seek(0)
    if any(value is None for value in pts):
        return _PacketIndex(len(pts), None)
    return _PacketIndex(len(pts), {value: index for index, value in enumerate(sorted(pts))})  # type: ignore[type-var]


def decode_with_pyav(path: str, plan: IndexPlanner, threads: int = DECORD_THREADS) -> DecodedVideo:
    """Sequential decode keeping only the wanted frames (PyAV cannot seek to an exact frame cheaply).

    A packet the decoder rejects (a damaged frame in the middle) costs that frame, not the file: each
    decoded frame is placed by its pts in decord's index, and a wanted frame that was lost is replaced
    by the nearest frame decoded before it (after it at the very start), which the result's notes say.
    """
    with av.open(path) as container:
        if not container.streams.video:
            raise NoVideoStreamError(f"{path}: no video stream", path=path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        packets = _index_packets(container, stream)
        total = packets.count
        fps = float(stream.average_rate or stream.base_rate or 0)
        indices = plan(total, fps)
        decoded = _decode_wanted(container, stream, packets, set(indices))
    if decoded.missing:
        raise CorruptMediaError(f"{path}: the stream ended before frame {decoded.missing[0]} of {total}", path=path)
    frames = np.stack([decoded.frames[i] for i in indices])
    notes = []
    if decoded.damaged_packets:
        replaced = (f"; sampled frame(s) {', '.join(map(str, decoded.stand_ins))} were replaced by the nearest "
                    "decoded frame" if decoded.stand_ins else "")
        notes.append(f"{decoded.damaged_packets} damaged video packet(s) could not be decoded; frames after them "
                     f"may show artefacts{replaced}")
    return DecodedVideo(frames=frames, indices=indices, total_frames=total, avg_fps=fps, backend="pyav", notes=notes)


@dataclass
class _WantedFrames:
    frames: dict[int, np.ndarray]
    stand_ins: list[int]
    missing: list[int]
    damaged_packets: int


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24", interpolation=_PYAV_RGB_INTERPOLATION)


def _decode_wanted(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   packets: _PacketIndex, wanted: set[int]) -> _WantedFrames:
    by_index: dict[int, np.ndarray] = {}
    stand_ins: list[int] = []
    damaged = 0
    position = 0
    previous: av.VideoFrame | None = None
    last = max(wanted)
    done = False
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            damaged += 1
            continue
        for frame in frames:
            index = position
            if packets.index_of_pts is not None and frame.pts is not None:
                index = packets.index_of_pts.get(frame.pts, position)
            position = index + 1
            if damaged:  # frames lost before this one: the nearest earlier (or this) frame stands in
                for skipped in sorted(w for w in wanted if w < index and w not in by_index):
                    by_index[skipped] = _rgb(previous if previous is not None else frame)
                    stand_ins.append(skipped)
            if index in wanted:
                by_index[index] = _rgb(frame)
            previous = frame
            if index >= last:
                done = True
                break
        if done:
            break
    missing = sorted(wanted - by_index.keys())
    if missing and damaged and previous is not None:  # the damage reached the end of the stream
        for index in missing:
            by_index[index] = _rgb(previous)
        stand_ins += missing
        missing = []
    return _WantedFrames(by_index, sorted(stand_ins), missing, damaged)


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
