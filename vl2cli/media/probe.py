"""What a file is, decided by opening its container with PyAV (the extension is never trusted).

The probe runs before any decoding so every later stage can rely on its answer, and so broken files
fail early with a typed error that says what is wrong.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import av

from vl2cli.errors import CorruptMediaError, EmptyFileError, UnreadableFileError, UnsupportedMediaError
from vl2cli.media.audio import pick_audio_stream

MediaKind = Literal["video", "image", "audio"]

#: libavformat demuxers that read a single still image (image2 for files, *_pipe for sniffed streams).
_IMAGE_DEMUXER_SUFFIX = "_pipe"
_IMAGE_DEMUXERS = frozenset({"image2", "webp", "apng"})
#: Leading bytes of containers we recognise. A file that starts like one of these but cannot be
#: opened is corrupt (e.g. an mp4 cut before its moov atom); anything else is simply not media.
_CONTAINER_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"),  # ISO-BMFF / QuickTime
    (0, b"RIFF"), (0, b"\x1a\x45\xdf\xa3"), (0, b"OggS"), (0, b"fLaC"), (0, b"ID3"),
    (0, b"\x00\x00\x01\xba"), (0, b"\x47"), (0, b"FLV"), (0, b"\x30\x26\xb2\x75"),  # MPEG-PS/TS, FLV, ASF
    (0, b"\xff\xd8\xff"), (0, b"\x89PNG"), (0, b"GIF8"),
)
_SIGNATURE_READ_BYTES = 16
#: ISO-BMFF major brands of still images: FFmpeg's mov demuxer reads them as a 1-frame video, but
#: they are photos (Pillow decodes AVIF; upstream's image path).
_STILL_IMAGE_BRANDS = frozenset({b"avif"})


@dataclass
class MediaInfo:
    """Facts about one file, as reported in results and used to route it to a decoder."""

    path: str
    kind: MediaKind
    size_bytes: int
    container: str | None
    duration_s: float | None
    has_video: bool
    has_audio: bool
    width: int | None
    height: int | None
    avg_fps: float | None
    num_frames: int | None
    video_codec: str | None
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (for the output record)."""
        return asdict(self)


def _looks_like_known_container(path: str) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(_SIGNATURE_READ_BYTES)
    return any(head[offset:offset + len(magic)] == magic for offset, magic in _CONTAINER_SIGNATURES)


def _is_still_image_brand(path: str, fmt: str) -> bool:
    if not fmt.startswith("mov"):
        return False
    with open(path, "rb") as handle:
        head = handle.read(_SIGNATURE_READ_BYTES)
    return head[4:8] == b"ftyp" and head[8:12] in _STILL_IMAGE_BRANDS


def _is_cover_art(stream: av.stream.Stream) -> bool:
    """Embedded album art (mp3/m4a) shows up as a video stream but is not a video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _regular_file_size(path: str) -> int:
    """The size of `path`, which must be a regular file that this user can read.

    Why not `os.path.isfile`: it says "no" for a FIFO, a device (/dev/zero) and a file that vanished
    alike, and opening a FIFO would block the decoder forever. Each case gets its own answer here.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise UnreadableFileError(f"{path}: the file no longer exists (it was removed after it was listed)",
                                  path=path) from exc
    except OSError as exc:
        raise UnreadableFileError(f"{path}: cannot read ({exc.strerror})", path=path) from exc
    if stat.S_ISDIR(info.st_mode):
        raise UnsupportedMediaError(f"{path}: a folder, not a media file", path=path)
    if not stat.S_ISREG(info.st_mode):
        raise UnsupportedMediaError(f"{path}: not a regular file (a pipe, device or socket); vl2 reads media files",
                                    path=path)
    if not os.access(path, os.R_OK):
        raise UnreadableFileError(f"{path}: cannot read (permission denied)", path=path)
    return info.st_size


def _open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path)
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT):
            raise UnreadableFileError(f"{path}: cannot read ({os.strerror(exc.errno)})", path=path) from exc
        if _looks_like_known_container(path):
            raise CorruptMediaError(f"{path}: the container is damaged or truncated and cannot be read ({exc})",
                                    path=path) from exc
        raise UnsupportedMediaError(f"{path}: not a video, image or audio file that FFmpeg recognises", path=path) from exc


def open_and_probe(path: str | Path) -> tuple[MediaInfo, av.container.InputContainer]:
    """Probe, and hand back the open container too (the caller closes it).

    Why: opening runs FFmpeg's stream-info probe, which decodes a few frames (~25 ms on a 720p file);
    the loader decodes the audio track from this same container instead of opening the file again.
    Raises as `probe_media`.
    """
    path = str(path)
    size = _regular_file_size(path)
    if size == 0:
        raise EmptyFileError(f"{path}: the file is empty (0 bytes)", path=path)
    container = _open_container(path)
    try:
        return _describe(path, size, container), container
    except BaseException:
        container.close()
        raise


def probe_media(path: str | Path) -> MediaInfo:
    """Open the container and classify it: video (with/without audio), image, or audio-only.

    Raises EmptyFileError (0 bytes), CorruptMediaError (recognised but unreadable) or
    UnsupportedMediaError (not media, or no decodable video/audio stream).
    """
    info, container = open_and_probe(path)
    container.close()
    return info


def _decodable(stream: av.stream.Stream) -> bool:
    """FFmpeg demuxes some codecs this build has no decoder for; PyAV then gives no codec context."""
    return getattr(stream, "codec_context", None) is not None


def _describe(path: str, size: int, container: av.container.InputContainer) -> MediaInfo:
    fmt = container.format.name
    all_videos = [s for s in container.streams.video if not _is_cover_art(s)]
    videos = [s for s in all_videos if _decodable(s)]
    audios = [s for s in container.streams.audio if _decodable(s)]
    if not videos and not audios and (all_videos or container.streams.audio):
        raise UnsupportedMediaError(f"{path}: this FFmpeg build has no decoder for the {fmt} file's streams",
                                    path=path)
    video = videos[0] if videos else None
    audio = pick_audio_stream(container) if audios else None  # the one decoded: the ffmpeg CLI's choice
    is_image = video is not None and (fmt.endswith(_IMAGE_DEMUXER_SUFFIX) or fmt in _IMAGE_DEMUXERS
                                      or _is_still_image_brand(path, fmt))
    if is_image:
        kind: MediaKind = "image"
    elif video is not None:
        kind = "video"
    elif audio is not None:
        kind = "audio"
    else:
        raise UnsupportedMediaError(f"{path}: the {fmt} container has no video or audio stream", path=path)
    duration = container.duration / av.time_base if container.duration and not is_image else None
    fps = float(video.average_rate) if video is not None and video.average_rate and not is_image else None
    return MediaInfo(
        path=path, kind=kind, size_bytes=size, container=fmt, duration_s=duration,
        has_video=video is not None, has_audio=audio is not None,
        width=video.codec_context.width if video is not None else None,
        height=video.codec_context.height if video is not None else None,
        avg_fps=fps,
        num_frames=(1 if is_image else (video.frames or None)) if video is not None else None,
        video_codec=video.codec_context.name if video is not None else None,
        audio_codec=audio.codec_context.name if audio is not None else None,
        audio_sample_rate=audio.codec_context.sample_rate if audio is not None else None,
        audio_channels=audio.codec_context.channels if audio is not None else None,
    )
