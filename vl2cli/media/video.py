"""Decoding the sampled frames of a video: decord (upstream's reader) where it is right, PyAV elsewhere.

The rule (docs/media.md "Video frames"): upstream's decord is kept, bit for bit, for the files it
decodes right (well-formed H.264/HEVC/VP9 MP4, WebM...). For the codecs and containers whose seeking
decord 0.6 is known to get wrong (`decord_misreads`), vl2 decodes with PyAV instead and shows the
model the frames at the sampled indices as a player shows them (decoder output order, hidden edit-list
frames not counted, display rotation applied), and the result's notes say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import av
import numpy as np

from vl2cli.errors import CorruptMediaError, NoVideoStreamError, UnsupportedMediaError

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
    #: Display rotation applied (degrees counter-clockwise, as ffprobe's display matrix "rotation"; 0: none).
    rotation: int = 0
    #: What the record should say about these frames (e.g. damaged packets replaced by neighbours).
    notes: list[str] = field(default_factory=list)
    #: Where the last frame ends on the file's timeline (s), from the packets' timestamps (PyAV only).
    end_s: float | None = None


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
    end_s: float | None = None  # the last frame's end on the file's timeline


def _index_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _PacketIndex:
    """decord's `len(vr)` and frame order: every packet the stream demuxes into, sorted by pts.

    Why not `stream.frames`: a header can promise frames that are not there (an MPEG-4 Part 2 AVI
    claiming 257 of its 255 frames); the sampled indices would then differ from decord's. PyAV ends a
    demux with an empty flush packet (no data, no timestamps), which is not counted; nor are packets an
    MP4 edit list hides (flagged discard: the decoder drops their frames, a player never shows them).
    The caller decodes from a fresh container: seeking back to 0 after the demux lands late in some
    files (a Matroska file with a negative start time).
    """
    pts: list[int | None] = []
    end: int | None = None
    for packet in container.demux(stream):
        if (packet.size or packet.pts is not None or packet.dts is not None) and not packet.is_discard:
            pts.append(packet.pts)
            if packet.pts is not None:
                end = max(end if end is not None else packet.pts, packet.pts + (packet.duration or 0))
    if any(value is None for value in pts):
        return _PacketIndex(len(pts), None)
    origin = container.start_time / av.time_base if container.start_time else 0.0
    end_s = float(end * stream.time_base) - origin if end is not None and stream.time_base else None
    return _PacketIndex(len(pts), {value: index for index, value in enumerate(sorted(pts))},  # type: ignore[type-var]
                        end_s)


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
        _require_decoder(path, stream)
        packets = _index_packets(container, stream)
        total = packets.count
        fps = float(stream.average_rate or stream.base_rate or 0)
    indices = plan(total, fps)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
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
    if decoded.rotation:
        notes.append(f"display rotation {decoded.rotation}° applied (the frames are shown upright, as a player shows them)")
    return DecodedVideo(frames=frames, indices=indices, total_frames=total, avg_fps=fps, backend="pyav",
                        rotation=decoded.rotation, notes=notes, end_s=packets.end_s)


def _require_decoder(path: str, stream: av.stream.Stream) -> None:
    """A stream FFmpeg can demux but not decode (no decoder in this build) is unsupported, not a crash."""
    context = stream.codec_context
    if context is None or getattr(context, "codec", None) is None:
        raise UnsupportedMediaError(f"{path}: no decoder for its {stream.type} stream "
                                    f"({getattr(stream, 'codec_tag', '') or 'unknown codec'}) in this FFmpeg build",
                                    path=path)


@dataclass
class _WantedFrames:
    frames: dict[int, np.ndarray]
    stand_ins: list[int]
    missing: list[int]
    damaged_packets: int
    rotation: int = 0


def _rotation(frame: av.VideoFrame) -> int:
    """The frame's display-matrix rotation in degrees counter-clockwise, snapped to 0/90/180/270 (-90
    is stored as 270), as the FFmpeg CLI's autorotate does; 0 when there is none."""
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """RGB as the CLI converts it, turned upright by the display rotation (np.rot90 turns counter-clockwise)."""
    rgb = frame.to_ndarray(format="rgb24", interpolation=_PYAV_RGB_INTERPOLATION)
    turns = _rotation(frame) // 90
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _decode_wanted(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   packets: _PacketIndex, wanted: set[int]) -> _WantedFrames:
    by_index: dict[int, np.ndarray] = {}
    stand_ins: list[int] = []
    rotation = 0
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
            # frames are numbered in the order the decoder outputs them (a player's order); only after a
            # lost packet is the pts used to skip the frames that never came (never backwards: a pts
            # that wrapped or repeats must not renumber the frames)
            index = position
            if damaged and packets.index_of_pts is not None and frame.pts is not None:
                index = max(packets.index_of_pts.get(frame.pts, position), position)
            position = index + 1
            if previous is None:
                rotation = _rotation(frame)
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
    return _WantedFrames(by_index, sorted(stand_ins), missing, damaged, rotation)


#: Codecs whose frames decord 0.6 seeks to wrongly (checked against the FFmpeg CLI's decode, issue 20):
#: MPEG-1/2 (one GOP late), WMV/VC-1 (frames from 0.5 s earlier), MPEG-4 Part 2 / XviD / DivX and its
#: relatives (B-frames: frames seconds off, the first ones repeated).
DECORD_MISSEEKS_CODECS = frozenset({"mpeg1video", "mpeg2video", "wmv1", "wmv2", "wmv3", "vc1", "mpeg4",
                                    "msmpeg4v1", "msmpeg4v2", "msmpeg4v3", "h263", "h263p", "flv1"})
#: Containers where decord's seeking is wrong whatever the codec: MPEG transport and program streams
#: (VOB), ASF/WMV.
DECORD_MISSEEKS_CONTAINERS = frozenset({"mpegts", "mpeg", "vob", "asf", "mpegvideo", "m4v"})
#: Codecs that may use open GOPs, which decord misplaces in Matroska (the last frames are never seen).
_OPEN_GOP_CODECS = frozenset({"h264", "hevc"})
#: Packets read at the start of a stream to find edit-list-hidden (discard) packets, or missing timestamps.
_SCAN_PACKETS = 64
#: Packets read in a Matroska H.264/HEVC stream to find a keyframe after the first (x264's default GOP
#: is 250 frames; a longer first GOP is taken as closed).
_OPEN_GOP_SCAN_PACKETS = 300
#: NAL unit types: H.264 IDR slice (a closed GOP starts with one); HEVC IDR_W_RADL / IDR_N_LP.
_H264_IDR = 5
_HEVC_IDR = frozenset({19, 20})
_H264_NAL_TYPE_MASK = 0x1F
_HEVC_NAL_TYPE_SHIFT, _HEVC_NAL_TYPE_MASK = 1, 0x3F
_NAL_LENGTH_BYTES = 4  # Matroska/MP4 (AVCC/HVCC) length prefix, the size every muxer writes


def _nal_types(payload: bytes, codec: str) -> list[int]:
    """The NAL unit types of one length-prefixed (AVCC/HVCC) packet."""
    types, at = [], 0
    while at + _NAL_LENGTH_BYTES < len(payload):
        length = int.from_bytes(payload[at:at + _NAL_LENGTH_BYTES], "big")
        header = payload[at + _NAL_LENGTH_BYTES]
        types.append(header & _H264_NAL_TYPE_MASK if codec == "h264"
                     else (header >> _HEVC_NAL_TYPE_SHIFT) & _HEVC_NAL_TYPE_MASK)
        at += _NAL_LENGTH_BYTES + max(length, 1)
    return types


def _is_open_gop_keyframe(payload: bytes, codec: str) -> bool:
    """A keyframe that is not an IDR (a recovery point / CRA): the GOP before it is open."""
    types = _nal_types(payload, codec)
    if codec == "h264":
        return bool(types) and _H264_IDR not in types
    return bool(types) and not _HEVC_IDR & set(types)


def decord_misreads(path: str) -> str | None:
    """Why decord (upstream's reader) would show other frames than a player for `path`, or None.

    A cheap look (open, and demux a few hundred packets at most, no decoding): the codec or container
    is one whose seeking decord 0.6 gets wrong; the stream starts before 0 s; packets carry no
    timestamps; an MP4 edit list hides frames (decord counts them, so every sampled index lands late);
    or a Matroska H.264/HEVC stream has open GOPs.
    """
    return _look(path)[0]


#: Container options for the look: no stream-info probing (which decodes frames: ~30 ms on a 720p MP4).
#: The codec, start time and coded size come from the headers; a file whose video stream the headers
#: do not describe is opened again with full probing.
_QUICK_OPEN = {"probesize": "32", "analyzeduration": "0"}


def _look(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """`decord_misreads`'s answer and the stream's coded (height, width)."""
    try:
        answer = _look_into(path, _QUICK_OPEN)
        return answer if answer is not None else (_look_into(path, {}) or (None, None))
    except (av.error.FFmpegError, OSError):
        return None, None  # decord gets its chance; its error says what is wrong


def _look_into(path: str, options: dict[str, str]) -> tuple[str | None, tuple[int, int] | None] | None:
    """The look with these container options; None when they did not reveal the video stream."""
    with av.open(path, container_options=options) as container:
        formats = set(container.format.name.split(","))
        if formats & DECORD_MISSEEKS_CONTAINERS:
            return f"decord seeks in {container.format.name} files to the wrong frames", None
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        context = videos[0].codec_context if videos else None
        if context is None or not context.name or not context.width:
            return None if options else (None, None)
        stream = videos[0]
        codec, coded = context.name, (context.height, context.width)
        if codec in DECORD_MISSEEKS_CODECS:
            return f"decord seeks {codec} video to the wrong frames", coded
        if (stream.start_time or 0) < 0 or (container.start_time or 0) < 0:
            return "decord misplaces the frames of a stream that starts before 0 s", coded
        return _scan_packets(container, stream, codec, "matroska" in formats and codec in _OPEN_GOP_CODECS), coded


def _first_frame_rotation(path: str) -> int:
    """The display rotation of the first frame (one frame decoded with PyAV), 0 when it cannot be read."""
    try:
        with av.open(path) as container:
            return _rotation(next(container.decode(video=0)))
    except (av.error.FFmpegError, OSError, StopIteration):
        return 0


def _scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream, codec: str,
                  look_for_open_gop: bool) -> str | None:
    limit = _OPEN_GOP_SCAN_PACKETS if look_for_open_gop else _SCAN_PACKETS
    keyframes = 0
    for count, packet in enumerate(container.demux(stream)):
        if count >= limit or (not packet.size and packet.pts is None and packet.dts is None):
            break  # far enough, or the demuxer's flush packet
        if packet.is_discard:
            return "decord counts the frames an MP4 edit list hides, so its frames come late"
        if packet.pts is None and packet.dts is None:
            return "the video packets carry no timestamps, which decord cannot seek by"
        if look_for_open_gop and packet.is_keyframe:
            keyframes += 1
            if keyframes > 1 and _is_open_gop_keyframe(bytes(packet), codec):
                return f"decord misplaces open-GOP {codec} frames in Matroska (the last frames go unseen)"
    return None


def decode_video_frames(path: str, plan: IndexPlanner, backend: VideoBackend = "decord", *,
                        threads: int = DECORD_THREADS) -> DecodedVideo:
    """Decode the planned frames.

    backend "decord": upstream's reader, unless `decord_misreads(path)` (then PyAV, and a note says
    why) or decord cannot open the file (e.g. AV1; then PyAV). "pyav": PyAV always.
    `threads`: decoder threads (the frames do not depend on it).
    """
    divergence = None
    if backend == "decord":
        divergence, coded = _look(path)
        if divergence is None:
            try:
                decoded = decode_with_decord(path, plan, threads)
            except CorruptMediaError:
                raise
            except Exception:  # decord raises bare RuntimeError/DECORDError for codecs it lacks (e.g. AV1)
                pass
            else:
                # decord applies a 90°/270° display matrix itself (its frames come out turned): say which
                if coded is not None and coded[0] != coded[1] and decoded.frames.shape[1:3] == coded[::-1]:
                    decoded.rotation = _first_frame_rotation(path)
                return decoded
    try:
        decoded = decode_with_pyav(path, plan, threads)
    except (av.error.FFmpegError, ValueError) as exc:
        raise CorruptMediaError(f"{path}: the video stream cannot be decoded ({exc})", path=path) from exc
    if divergence is not None:
        decoded.notes.insert(0, f"decoded with PyAV, not decord (upstream's reader): {divergence}; vl2 shows "
                                "the frames a player shows at the sampled indices, upstream's model may have "
                                "seen others (a deliberate divergence, docs/media.md)")
    return decoded
